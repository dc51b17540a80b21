package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"mp3converter/internal/client"
	"mp3converter/internal/local/stack"
)

// The client commands run against one real local stack, shared by the tests
// of this package: every function, the local Broker (RabbitMQ when
// RABBITMQ_URL is set), MySQL (MYSQL_DSN or embedded), FerretDB (or
// MONGODB_URI), real ffmpeg. Uploads are capped at maxUpload bytes.

const (
	adminEmail    = "admin@example.com"
	adminPassword = "admin-password-1"
	maxUpload     = 1 << 20
)

var shared struct {
	once    sync.Once
	url     string
	token   string
	err     error
	cleanup []func()
}

func TestMain(m *testing.M) {
	// The functions log through slog.Default: only what goes wrong, in test output.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	code := m.Run()
	for i := len(shared.cleanup) - 1; i >= 0; i-- {
		shared.cleanup[i]()
	}
	os.Exit(code)
}

// server returns the shared stack's URL and an admin token, starting it on first use.
func server(t *testing.T) (url, token string) {
	t.Helper()
	shared.once.Do(func() { shared.err = startShared() })
	if shared.err != nil {
		t.Fatalf("starting the local stack: %v", shared.err)
	}
	return shared.url, shared.token
}

func startShared() error {
	dir, err := os.MkdirTemp("", "mp3c-cli-test-")
	if err != nil {
		return err
	}
	shared.cleanup = append(shared.cleanup, func() { os.RemoveAll(dir) })
	suffix := randomHex(4)
	env := map[string]string{
		"PATH":                os.Getenv("PATH"),
		"TMPDIR":              dir,
		"MP3C_ADMIN_EMAIL":    adminEmail,
		"MP3C_ADMIN_PASSWORD": adminPassword,
		"BCRYPT_COST":         "4",
		"MAX_UPLOAD_BYTES":    strconv.Itoa(maxUpload),
		"RABBITMQ_URL":        os.Getenv("RABBITMQ_URL"),
	}
	if uri := os.Getenv("MONGODB_URI"); uri != "" {
		env["MONGODB_URI"] = uri
		env["MONGODB_DB_PREFIX"] = "cli" + suffix + "_"
	}
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		if env["MYSQL_DSN"], err = isolatedDSN(dsn, "cli_"+suffix); err != nil {
			return err
		}
	}
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Config{
		Addr:         "127.0.0.1:0",
		DataDir:      filepath.Join(dir, "data"),
		Env:          env,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		BrokerPrefix: "cli" + suffix,
	})
	if err != nil {
		return err
	}
	shared.cleanup = append(shared.cleanup, func() {
		if err := s.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the stack:", err)
		}
	})
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := s.WaitReady(readyCtx); err != nil {
		return err
	}
	tok, err := (&client.Client{Server: s.URL}).Login(readyCtx, adminEmail, adminPassword)
	if err != nil {
		return err
	}
	shared.url, shared.token = s.URL, tok.AccessToken
	return nil
}

// isolatedDSN points dsn at a database of its own, dropped at the end.
func isolatedDSN(dsn, dbName string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	cfg.DBName = dbName
	cfg.ParseTime = true
	shared.cleanup = append(shared.cleanup, func() {
		admin := *cfg
		admin.DBName = ""
		if db, err := sql.Open("mysql", admin.FormatDSN()); err == nil {
			db.Exec("DROP DATABASE IF EXISTS `" + dbName + "`")
			db.Close()
		}
	})
	return cfg.FormatDSN(), nil
}

// loggedIn isolates the config dir and sets MP3C_TOKEN to the admin's token.
func loggedIn(t *testing.T) (url string) {
	t.Helper()
	url, token := server(t)
	t.Setenv("MP3C_CONFIG_DIR", t.TempDir())
	t.Setenv("MP3C_TOKEN", token)
	return url
}

// run runs a command of a with a bounded context and returns what it printed.
func run(t *testing.T, a *app, cmd func(*app, context.Context, []string) error, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if a == nil {
		a = &app{}
	}
	a.out = &out
	if a.poll == 0 {
		a.poll = 50 * time.Millisecond
	}
	err := cmd(a, ctx, args)
	t.Logf("mp3converter %v:\n%s(err: %v)", args, out.String(), err)
	return out.String(), err
}

var (
	convertCmd  = (*app).convert
	statusCmd   = (*app).status
	downloadCmd = (*app).download
)

// makeVideo generates a 2-second H.264 clip, with a 440 Hz tone when
// withAudio, with ffmpeg's lavfi sources.
func makeVideo(t *testing.T, dir, name string, withAudio bool) string {
	t.Helper()
	path := filepath.Join(dir, name)
	args := []string{"-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=160x120:rate=10"}
	if withAudio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac")
	}
	args = append(args, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", path)
	if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

// probe returns the codec of the first audio stream and the duration.
func probe(t *testing.T, path string) (codec string, seconds float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "stream=codec_name:format=duration", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		}
		Format struct{ Duration string }
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Streams) > 0 {
		codec = p.Streams[0].CodecName
	}
	seconds, _ = strconv.ParseFloat(p.Format.Duration, 64)
	return codec, seconds
}

// assertMP3 fails unless path is an MP3 of about 2 s.
func assertMP3(t *testing.T, path string) {
	t.Helper()
	if codec, secs := probe(t, path); codec != "mp3" || secs < 1.8 || secs > 2.3 {
		t.Fatalf("%s: %s of %.2f s, want an MP3 of about 2 s", path, codec, secs)
	}
}

// noPartFiles fails if a .part file is left in dir.
func noPartFiles(t *testing.T, dir string) {
	t.Helper()
	parts, _ := filepath.Glob(filepath.Join(dir, "*.part"))
	if len(parts) > 0 {
		t.Fatalf("left behind: %v", parts)
	}
}

// waitDone polls the job (bounded) until it is finished.
func waitDone(t *testing.T, url, token, fid string) client.Job {
	t.Helper()
	c := &client.Client{Server: url, Token: token}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		j, err := c.Job(ctx, fid)
		if err != nil {
			t.Fatalf("job %s: %v", fid, err)
		}
		if j.Finished() {
			return j
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			t.Fatalf("job %s still %s: %v", fid, j.State, err)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
