package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	web "mp3converter/functions/web"
	"mp3converter/internal/local/funchost"
)

var functionNames = slices.DeleteFunc(slices.Clone(funchost.Names), func(n string) bool {
	return n == "sweep" || n == "web" // no first request of their own defined here yet
})

// coldRuns are one function's samples with one binary.
type coldRuns struct {
	ready, first, warm samples
	rss                kibs // VmRSS when ready
}

// coldStart starts each function as its own process, the way scale-from-zero
// does, and times process start → readiness 200 → first answered request,
// then a second (warm) request of the same kind.
func (b *bench) coldStart(ctx context.Context) (*section, error) {
	sec := &section{title: "5. Cold start (scale from zero)"}
	s, err := b.startStack(ctx, "coldstart", false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	logw, err := b.processLog("coldstart-functions")
	if err != nil {
		return nil, err
	}
	defer logw.Close()
	mailDir := filepath.Join(s.dir, "cold-outbox")
	tmpDir := filepath.Join(s.dir, "tmp")
	envOf := func(name string) map[string]string {
		env := map[string]string{
			"MONGODB_URI":         s.MongoURI,
			"MYSQL_DSN":           s.MySQLDSN,
			"JWT_PUBLIC_KEY_FILE": s.keyFile("jwt-public.pem"),
			"VALIDATE_URL":        s.Functions["validate"] + "/validate",
			"K_SINK":              s.BrokerURL,
			"MAIL_DIR":            mailDir,
			"BCRYPT_COST":         bcryptCost,
			"TMPDIR":              tmpDir,
			"LINK_SECRET":         benchLinkSecret,
		}
		if name == "login" {
			env["JWT_PRIVATE_KEY_FILE"] = s.keyFile("jwt-private.pem")
		}
		if name == "web" { // its routes: each function's base URL
			for fn, setting := range web.Upstreams {
				env[setting] = s.Functions[fn]
			}
		}
		return env
	}
	clip := b.media["10s-360p"]
	mp3ID := bson.NewObjectID()
	if _, err := gridfsWrite(ctx, s.mongo, "mp3s", mp3ID, "cold.mp3", newGenerated(1<<20, id3), bson.D{
		{Key: "username", Value: adminEmail}, {Key: "video_fid", Value: mp3ID.Hex()}, {Key: "duration_seconds", Value: 60.0}}); err != nil {
		return nil, err
	}

	// prepare sets up one request of the function's main kind (unmeasured)
	// and returns the request to send to the function at base.
	prepare := func(name string) (func(base string) error, string, error) {
		switch name {
		case "validate":
			return func(base string) error {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/validate", nil)
				req.Header.Set("Authorization", "Bearer "+s.AdminToken)
				return expect200(req)
			}, "POST /validate", nil
		case "login":
			return func(base string) error { _, err := login(ctx, base); return err }, "POST /login", nil
		case "web":
			return func(base string) error { _, err := login(ctx, base); return err }, "POST /login, passed on to the stack's login", nil
		case "upload":
			return func(base string) error { _, _, err := uploadFile(ctx, base, s.AdminToken, clip.path); return err },
				"POST /upload of the " + clip.label + " clip (" + mib(clip.size) + ")", nil
		case "download":
			return func(base string) error {
				n, err := downloadTo(ctx, base, s.AdminToken, mp3ID.Hex(), io.Discard)
				if err == nil && n != 1<<20 {
					err = fmt.Errorf("downloaded %d bytes", n)
				}
				return err
			}, "GET /download of a 1 MiB MP3", nil
		case "convert":
			// Uploaded through the stack, whose Broker routes the event nowhere.
			fid, _, err := uploadFile(ctx, s.URL, s.AdminToken, clip.path)
			if err != nil {
				return nil, "", err
			}
			job, err := jobDoc(ctx, s.mongo, fid)
			if err != nil {
				return nil, "", err
			}
			data := map[string]any{"video_fid": fid, "username": job["username"], "filename": job["filename"],
				"content_type": job["content_type"], "size": job["size"]}
			return func(base string) error {
				reply, err := postEvent(ctx, base+"/", typeUploaded, fid, "/functions/upload", data)
				if err == nil && reply != typeConverted {
					err = fmt.Errorf("convert replied %q", reply)
				}
				return err
			}, "video.uploaded event: converting the " + clip.label + " clip", nil
		case "notify":
			oid := bson.NewObjectID()
			now := time.Now().UTC()
			_, err := s.mongo.Database("videos").Collection("jobs").InsertOne(ctx, bson.D{
				{Key: "_id", Value: oid}, {Key: "username", Value: adminEmail}, {Key: "filename", Value: "cold.mp4"},
				{Key: "content_type", Value: "video/mp4"}, {Key: "size", Value: int64(1 << 20)}, {Key: "state", Value: "done"},
				{Key: "reason", Value: ""}, {Key: "mp3_fid", Value: oid.Hex()}, {Key: "duration_seconds", Value: 60.0},
				{Key: "attempts", Value: int32(1)}, {Key: "created_at", Value: now}, {Key: "updated_at", Value: now}})
			if err != nil {
				return nil, "", err
			}
			data := map[string]any{"video_fid": oid.Hex(), "mp3_fid": oid.Hex(), "username": adminEmail,
				"filename": "cold.mp3", "size": 1 << 20, "duration_seconds": 60.0}
			return func(base string) error {
				if _, err := postEvent(ctx, base+"/", typeConverted, "mp3-"+oid.Hex(), "/functions/convert", data); err != nil {
					return err
				}
				if _, err := os.Stat(filepath.Join(mailDir, oid.Hex()+"-ready.eml")); err != nil {
					return fmt.Errorf("notify answered but wrote no email: %w", err)
				}
				return nil
			}, "mp3.converted event: writing the email (.eml)", nil
		}
		return nil, "", fmt.Errorf("no function %q", name)
	}

	binaries := []struct{ label, path string }{{"mp3converter", b.mp3converter}, {"fnhost", b.fnhost}}
	res := map[string]map[string]*coldRuns{}
	what := map[string]string{}
	for _, bin := range binaries {
		res[bin.label] = map[string]*coldRuns{}
		for _, name := range functionNames {
			r := &coldRuns{}
			res[bin.label][name] = r
			for range b.opts.runs {
				first, desc, err := prepare(name)
				if err != nil {
					return nil, err
				}
				second, _, err := prepare(name)
				if err != nil {
					return nil, err
				}
				what[name] = desc
				p, err := startFunction(bin.path, name, envOf(name), logw)
				if err != nil {
					return nil, err
				}
				ready, err := p.waitReady(ctx, 30*time.Second)
				var rss int64
				if err == nil {
					rss, err = p.status("VmRSS")
				}
				if err == nil {
					err = first(p.URL)
				}
				answered := time.Now()
				var warm time.Duration
				if err == nil {
					t := time.Now()
					err = second(p.URL)
					warm = time.Since(t)
				}
				p.stop()
				if err != nil {
					return nil, fmt.Errorf("%s %s: %w", bin.label, name, err)
				}
				r.ready = append(r.ready, ready.Sub(p.started))
				r.first = append(r.first, answered.Sub(p.started))
				r.warm = append(r.warm, warm)
				r.rss = append(r.rss, rss)
			}
			b.progress("cold start %s %s: ready %s, first answer %s, warm request %s", bin.label, name,
				fmtDur(r.ready.median()), fmtDur(r.first.median()), fmtDur(r.warm.median()))
		}
	}

	sec.header = []string{"Function (request)", "`mp3converter function NAME`: start → ready", "→ first answer", "functions-only binary: start → ready", "→ first answer", "Warm request (same kind)", "First answer ÷ warm request: mp3converter / functions-only", "RSS when ready: mp3converter / functions-only"}
	for _, name := range functionNames {
		m, f := res["mp3converter"][name], res["fnhost"][name]
		sec.rows = append(sec.rows, []string{name + " (" + what[name] + ")",
			fmtDur(m.ready.median()), fmtDur(m.first.median()), fmtDur(f.ready.median()), fmtDur(f.first.median()),
			fmtDur(m.warm.median()), ratio(m.first.median(), m.warm.median()) + " / " + ratio(f.first.median(), f.warm.median()),
			mibOfKiB(m.rss.median()) + " / " + mibOfKiB(f.rss.median())})
	}
	sec.note("Each function runs alone in a new process per run: `bench/out/bin/mp3converter function NAME` (the CLI binary, %s) and `bench/out/bin/fnhost NAME` (bench/fnhost: the same host and functions without the local stack's embedded servers, %s; closer to a `func build` image). Both with LISTEN_ADDRESS and the configuration a container gets (the stack's FerretDB, go-mysql-server, RS256 keys, validate, Broker).", fileMiB(b.mp3converter), fileMiB(b.fnhost))
	sec.note("Start → ready: from just before exec to the first 200 of `GET /health/readiness`, polled every 1 ms on a new connection each time. → first answer: until the first request of the kind named in the first column has been answered completely (the function dials MySQL/MongoDB lazily, so this includes connecting). Warm request: a second request of the same kind right after, on the same connection. RSS when ready: VmRSS from /proc/PID/status at readiness. Medians of %d runs per function and binary; the process is stopped with SIGTERM after each run.", b.opts.runs)
	return sec, nil
}

func fileMiB(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "size unknown"
	}
	return mib(st.Size())
}
