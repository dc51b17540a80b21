# The two commands a newcomer needs: `make run` and `make test`.
# Each installs what it lacks (ffmpeg, MariaDB's server; chromium for the browser tests) and builds the rest with Go.

GO        ?= go
# Every folder of functions/ is a function module.
FUNCTIONS := $(notdir $(wildcard functions/*))
# Every package of the workspace: the root module and every function module.
PACKAGES  := mp3converter/...

.PHONY: run test build vet function-builds knative-check ffmpeg mariadb chromium screenshots clean bench reliability

## run: the whole system on this machine (the web app and API on 127.0.0.1:8080)
# The binary runs in make's place (exec), not under `go run`: Ctrl-C then
# reaches it alone, and a clean stop exits 0 (go run reports exit status 1
# when it is interrupted, whatever the program returns).
run: ffmpeg mariadb build
	exec ./bin/mp3converter up

## test: vet, every test with the race detector, and each function built alone
test: ffmpeg chromium vet
	$(GO) test -race -timeout 30m $(PACKAGES)
	$(MAKE) function-builds

vet:
	$(GO) vet $(PACKAGES)

# A function is built by `func` from its own folder only: it must build and
# vet with the workspace switched off.
function-builds:
	@for f in $(FUNCTIONS); do \
		echo "functions/$$f: GOWORK=off go build ./... && go vet ./..."; \
		(cd functions/$$f && GOWORK=off $(GO) build ./... && GOWORK=off $(GO) vet ./...) || exit 1; \
	done

## knative-check: the manifests in knative/ against the cluster's rules (the one Knative model in
## knative/model and the checks in knative/validation), the func.yaml files and func's host build
## (part of make test too)
knative-check:
	$(GO) test -race -count=1 ./knative/...

## bench: measure the system against baselines run side by side on this
## machine (bare ffmpeg, plain GridFS, bcrypt, ...); writes bench/results.md.
## About 15 minutes on 2 cores; flags: go run ./bench -h
bench: ffmpeg
	BENCH_START=$$(date +%s.%N) $(GO) run ./bench

## reliability: crash, broker restart, outages, load, bad input, access control,
## brute force and fuzzing, with nothing lost (about 9 minutes on 2 cores). Prints a
## summary table and writes it into docs/reliability.md. The crash and broker cases
## need RabbitMQ (RABBITMQ_URL, default: the local one).
reliability: ffmpeg
	RABBITMQ_URL=$${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/} $(GO) run ./reliability/run

## build: the mp3converter binary in bin/
build:
	$(GO) build -o bin/mp3converter ./cmd/mp3converter

# ffmpeg and ffprobe come from the system's packages.
ffmpeg:
	@command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || { \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "installing ffmpeg with apt-get"; \
			SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg >/dev/null; \
		elif command -v brew >/dev/null 2>&1; then \
			echo "installing ffmpeg with brew"; brew install ffmpeg; \
		else \
			echo "ffmpeg is missing: install it with your package manager (e.g. 'sudo dnf install ffmpeg'), then run make again" >&2; exit 1; \
		fi; }

# MariaDB's server keeps the local stack's users in the data dir. Without it
# `up` still runs, on an in-memory stand-in that forgets users at exit.
mariadb:
	@command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || [ -x /usr/sbin/mysqld ] || { \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "installing mariadb-server with apt-get (the local stack keeps its users in it)"; \
			SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mariadb-server >/dev/null \
				|| echo "mariadb-server could not be installed: users will last only as long as the stack runs" >&2; \
		elif command -v brew >/dev/null 2>&1; then \
			echo "installing mariadb with brew"; brew install mariadb || true; \
		else \
			echo "MariaDB is not installed: users will last only as long as the stack runs (install mariadb-server to keep them)" >&2; \
		fi; }

# Chromium drives the web app's browser tests (internal/browsertest), headless.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium with apt-get"; \
			SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium is missing: install it with your package manager; the browser tests are skipped without it" >&2; \
		fi; }

## screenshots: PNGs of the web app (sign-in, an upload in progress, the file list) into docs/
screenshots: ffmpeg chromium
	MP3C_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run TestWebApp ./internal/browsertest/

clean:
	rm -rf bin
