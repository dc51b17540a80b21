package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"mp3converter/internal/client"
	"mp3converter/internal/stacktest"
)

const (
	adminEmail    = stacktest.AdminEmail
	adminPassword = stacktest.AdminPassword
	bcryptCost    = "10" // knative/config.yaml's BCRYPT_COST, and login's default
	chunkSize     = 128 * 1024
	// benchLinkSecret signs download links in the functions the harness starts itself.
	benchLinkSecret = "bench-link-secret-0123456789abcdef0123456789"
)

// localStack is the whole system in this process (internal/stacktest), on a
// fresh data directory: its own FerretDB files, so an empty database.
type localStack struct {
	*stacktest.Stack
	dir   string
	mongo *mongo.Client
}

// startStack starts the local stack. withConvert false drops the convert
// Trigger (its filter matches no event), so that uploads stay unconverted and
// the harness can hand convert the event itself.
func (b *bench) startStack(ctx context.Context, name string, withConvert bool) (*localStack, error) {
	return b.startStackWith(ctx, name, withConvert, nil)
}

// startStackWith is startStack with some function instances replaced.
func (b *bench) startStackWith(ctx context.Context, name string, withConvert bool, instances map[string]any, rewrites ...stacktest.Rewrite) (*localStack, error) {
	dir, err := os.MkdirTemp(b.tmpRoot(), name+"-")
	if err != nil {
		return nil, err
	}
	dir, _ = filepath.Abs(dir)
	var manifests fs.FS
	if !withConvert {
		rewrites = append(rewrites, withoutConvertTrigger)
	}
	if len(rewrites) > 0 {
		if manifests, err = stacktest.Manifests(rewrites...); err != nil {
			return nil, err
		}
	}
	s, err := stacktest.New(ctx, dir, stacktest.Options{
		Env: map[string]string{
			"HOME":        os.Getenv("HOME"),
			"BCRYPT_COST": bcryptCost,
			// What is measured: the embedded stand-ins and the in-memory
			// broker, whatever this shell's environment names.
			"MYSQL_DSN": "", "MONGODB_URI": "", "RABBITMQ_URL": "",
		},
		Logger:    slog.Default(),
		Manifests: manifests,
		Instances: instances,
	})
	ls := &localStack{Stack: s, dir: dir}
	if err != nil {
		ls.close()
		return nil, err
	}
	if ls.mongo, err = connectMongo(s.MongoURI); err != nil {
		ls.close()
		return nil, err
	}
	return ls, nil
}

// keyFile is the path of a key the stack generated into its data dir.
func (s *localStack) keyFile(name string) string {
	if p := filepath.Join(s.dir, "data", name); fileExists(p) {
		return p
	}
	return filepath.Join(s.dir, name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// close stops the stack and removes its data.
func (s *localStack) close() {
	if s.mongo != nil {
		s.mongo.Disconnect(context.Background())
	}
	if err := s.Close(); err != nil {
		slog.Warn("closing the stack", "err", err)
	}
	os.RemoveAll(s.dir)
}

// withoutSweep rewrites knative/ so that the sweep's PingSource fires once a year (January 1st).
func withoutSweep(path, text string) (string, error) {
	if path != "sweep.yaml" {
		return text, nil
	}
	out := strings.Replace(text, `schedule: "* * * * *"`, `schedule: "0 0 1 1 *"`, 1)
	if out == text {
		return "", errors.New(`knative/sweep.yaml: no schedule "* * * * *" to disable`)
	}
	return out, nil
}

// withoutConvertTrigger rewrites knative/ so that the convert Trigger's
// filter is on an event type nobody sends.
func withoutConvertTrigger(path, text string) (string, error) {
	if path != "triggers.yaml" {
		return text, nil
	}
	docs := strings.Split(text, "\n---")
	changed := false
	for i, doc := range docs {
		if strings.Contains(doc, "name: convert\n") && strings.Contains(doc, "kind: Trigger") {
			docs[i] = strings.Replace(doc, "type: dev.mp3converter.video.uploaded", "type: dev.mp3converter.video.uploaded.bench-not-routed", 1)
			changed = docs[i] != doc
		}
	}
	if !changed {
		return "", errors.New("knative/triggers.yaml: no convert Trigger filtering video.uploaded to disable")
	}
	return strings.Join(docs, "\n---"), nil
}

func connectMongo(uri string) (*mongo.Client, error) {
	return mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second))
}

// --- HTTP, as a client does it ---

// httpClient keeps connections alive between requests, as a real client would.
var httpClient = &http.Client{Transport: &http.Transport{
	MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second, DisableCompression: true,
}}

// api is a client of the server at base with token, on httpClient.
func api(base, token string) *client.Client {
	return &client.Client{Server: base, Token: token, HTTP: httpClient}
}

// login returns a token for the admin.
func login(ctx context.Context, base string) (string, error) {
	tok, err := api(base, "").Login(ctx, adminEmail, adminPassword)
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	return tok.AccessToken, nil
}

// uploadFile posts a file as a raw video/mp4 body to base/upload and returns
// its video_fid and when the 202 arrived.
func uploadFile(ctx context.Context, base, token, path string) (string, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", time.Time{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", time.Time{}, err
	}
	return uploadBody(ctx, base, token, filepath.Base(path), f, st.Size())
}

func uploadBody(ctx context.Context, base, token, name string, body io.Reader, size int64) (string, time.Time, error) {
	up, err := api(base, token).Upload(ctx, body, size, name, "video/mp4")
	if err != nil {
		return "", time.Time{}, err
	}
	return up.VideoFID, time.Now(), nil
}

// jobState asks GET /jobs/{fid}.
func jobState(ctx context.Context, base, token, fid string) (string, error) {
	job, err := api(base, token).Job(ctx, fid)
	if err != nil {
		return "", err
	}
	if job.State == "failed" {
		return "", fmt.Errorf("job %s failed: %s", fid, job.Reason)
	}
	return job.State, nil
}

// pollInterval bounds how late the harness sees a job done.
const pollInterval = 20 * time.Millisecond

// waitDone polls GET /jobs/{fid} every pollInterval until the job is done,
// for at most limit, and returns when it saw it done.
func waitDone(ctx context.Context, base, token, fid string, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		state, err := jobState(ctx, base, token, fid)
		if err != nil {
			return time.Time{}, err
		}
		if state == "done" {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	return time.Time{}, fmt.Errorf("job %s not done within %s", fid, limit)
}

// waitMail waits (bounded) for notify's email about fid in the outbox: the
// last step of a conversion, after convert has finished all its work.
func waitMail(ctx context.Context, s *localStack, fid string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if m, _ := filepath.Glob(filepath.Join(s.MailDir, fid+"-*.eml")); len(m) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	return fmt.Errorf("no email about %s within %s", fid, limit)
}

// downloadTo GETs base/download?fid= into w and returns the byte count.
func downloadTo(ctx context.Context, base, token, fid string, w io.Writer) (int64, error) {
	d, err := api(base, token).OpenDownload(ctx, fid, 0, "")
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", fid, err)
	}
	defer d.Body.Close()
	return io.Copy(w, d.Body)
}

// jobDoc reads a job as upload stored it.
func jobDoc(ctx context.Context, c *mongo.Client, fid string) (map[string]any, error) {
	oid, err := bson.ObjectIDFromHex(fid)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	err = c.Database("videos").Collection("jobs").FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&doc)
	return doc, err
}
