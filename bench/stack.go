package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing/fstest"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"mp3converter/internal/local/stack"
	"mp3converter/knative"
)

const (
	adminEmail    = "bench@example.com"
	adminPassword = "bench-password-1"
	bcryptCost    = "10" // knative/config.yaml's BCRYPT_COST, and login's default
	chunkSize     = 128 * 1024
)

// localStack is the whole system in this process (internal/local/stack), on a
// fresh data directory: its own FerretDB files, so an empty database.
type localStack struct {
	*stack.Stack
	dir   string
	token string // the admin's
	mongo *mongo.Client
}

// startStack starts the local stack. withConvert false drops the convert
// Trigger (its filter matches no event), so that uploads stay unconverted and
// the harness can hand convert the event itself.
func (b *bench) startStack(ctx context.Context, name string, withConvert bool) (*localStack, error) {
	return b.startStackWith(ctx, name, withConvert, nil)
}

// startStackWith is startStack with some function instances replaced.
func (b *bench) startStackWith(ctx context.Context, name string, withConvert bool, instances map[string]any) (*localStack, error) {
	dir, err := os.MkdirTemp(b.tmpRoot(), name+"-")
	if err != nil {
		return nil, err
	}
	dir, _ = filepath.Abs(dir)
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	var manifests fs.FS
	if !withConvert {
		if manifests, err = withoutConvertTrigger(); err != nil {
			return nil, err
		}
	}
	s, err := stack.Start(ctx, stack.Config{
		Addr:    "127.0.0.1:0",
		DataDir: dir,
		Env: map[string]string{
			"PATH":                os.Getenv("PATH"),
			"HOME":                os.Getenv("HOME"),
			"TMPDIR":              tmp,
			"MP3C_ADMIN_EMAIL":    adminEmail,
			"MP3C_ADMIN_PASSWORD": adminPassword,
			"BCRYPT_COST":         bcryptCost,
		},
		Logger:    slog.Default(),
		Manifests: manifests,
		Instances: instances,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ls := &localStack{Stack: s, dir: dir}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := s.WaitReady(rctx); err != nil {
		ls.close()
		return nil, err
	}
	if ls.token, err = login(rctx, s.URL); err != nil {
		ls.close()
		return nil, err
	}
	if ls.mongo, err = connectMongo(s.MongoURI); err != nil {
		ls.close()
		return nil, err
	}
	return ls, nil
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

// withoutConvertTrigger is knative/ with the convert Trigger's filter on an
// event type nobody sends.
func withoutConvertTrigger() (fs.FS, error) {
	out := fstest.MapFS{}
	err := fs.WalkDir(knative.Manifests, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(knative.Manifests, path)
		if err != nil {
			return err
		}
		text := string(data)
		if path == "triggers.yaml" {
			docs := strings.Split(text, "\n---")
			changed := false
			for i, doc := range docs {
				if strings.Contains(doc, "name: convert\n") && strings.Contains(doc, "kind: Trigger") {
					docs[i] = strings.Replace(doc, "type: dev.mp3converter.video.uploaded", "type: dev.mp3converter.video.uploaded.bench-not-routed", 1)
					changed = docs[i] != doc
				}
			}
			if !changed {
				return errors.New("knative/triggers.yaml: no convert Trigger filtering video.uploaded to disable")
			}
			text = strings.Join(docs, "\n---")
		}
		out[path] = &fstest.MapFile{Data: []byte(text)}
		return nil
	})
	return out, err
}

func connectMongo(uri string) (*mongo.Client, error) {
	return mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second))
}

// --- HTTP, as a client does it ---

// httpClient keeps connections alive between requests, as a real client would.
var httpClient = &http.Client{Transport: &http.Transport{
	MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second, DisableCompression: true,
}}

// login returns a token for the admin.
func login(ctx context.Context, base string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/login", nil)
	req.SetBasicAuth(adminEmail, adminPassword)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := doJSON(req, http.StatusOK, &out); err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	return out.AccessToken, nil
}

// doJSON sends req and decodes a JSON answer with the wanted status.
func doJSON(req *http.Request, want int, out any) error {
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/upload?filename="+name, body)
	if err != nil {
		return "", time.Time{}, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "video/mp4")
	req.Header.Set("Authorization", "Bearer "+token)
	var out struct {
		VideoFID string `json:"video_fid"`
	}
	if err := doJSON(req, http.StatusAccepted, &out); err != nil {
		return "", time.Time{}, err
	}
	return out.VideoFID, time.Now(), nil
}

// jobState asks GET /jobs/{fid}.
func jobState(ctx context.Context, base, token, fid string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/jobs/"+fid, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	var job struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	if err := doJSON(req, http.StatusOK, &job); err != nil {
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
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/download?fid="+fid, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("download %s: %d %s", fid, resp.StatusCode, b)
	}
	return io.Copy(w, resp.Body)
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
