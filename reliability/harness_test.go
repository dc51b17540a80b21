package reliability

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/go-sql-driver/mysql"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	convert "mp3converter/functions/convert"
	notify "mp3converter/functions/notify"
	upload "mp3converter/functions/upload"
	"mp3converter/internal/faultproxy"
	"mp3converter/internal/local/standins"
	"mp3converter/internal/mailtest"
	"mp3converter/internal/stacktest"
)

// The harness: a whole system (the local stack) on loopback, with its backing
// services started here so that the tests can reach them directly (to count
// documents) and put a fault proxy in front of each.

func TestMain(m *testing.M) {
	// The functions log through slog.Default: only what goes wrong, in test output
	// (MP3C_LOG_LEVEL=info: their own account of what happened).
	level := slog.LevelWarn
	level.UnmarshalText([]byte(os.Getenv("MP3C_LOG_LEVEL")))
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	// The MySQL driver logs every connection a fault proxy resets; the functions report what matters.
	mysql.SetLogger(log.New(io.Discard, "", 0))
	code := m.Run()
	closeShared()
	os.Exit(code)
}

// backing is MySQL, MongoDB and SMTP for one system. The *Direct addresses
// reach the services themselves; the stack is given the proxied ones when the
// system is proxied.
type backing struct {
	mysqlDirect, mongoDirect    string // DSN and URI
	mysqlDSN, mongoURI, smtpURL string // what the stack uses
	prefix                      string // MONGODB_DB_PREFIX
	mail                        *mailtest.Server
	proxies                     map[string]*faultproxy.Proxy // "mysql", "mongodb", "smtp"
}

// sysOptions shape a system.
type sysOptions struct {
	env       map[string]string // on top of the harness's
	proxied   bool              // fault proxies in front of MySQL, MongoDB and SMTP
	rabbit    bool              // the RabbitMQ backend (RABBITMQ_URL); else in memory
	external  map[string]string // functions run elsewhere (stack.Config.External)
	instances map[string]any    // stack.Config.Instances
}

// system is a running stack (stacktest) with its backing services.
type system struct {
	*stacktest.Stack
	backing
	mongo   *mongo.Client // direct, for counting
	closers []func()      // run last first
}

// newSystem starts a system for one test and stops it when the test ends.
func newSystem(t testing.TB, o sysOptions) *system {
	t.Helper()
	s, err := startSystem(o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

func startSystem(o sysOptions, dir string) (s *system, err error) {
	s = &system{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := s.startBacking(o.proxied, dir); err != nil {
		return s, err
	}
	env := map[string]string{
		"MYSQL_DSN":         s.mysqlDSN,
		"MONGODB_URI":       s.mongoURI,
		"MONGODB_DB_PREFIX": s.prefix,
		"SMTP_URL":          s.smtpURL,
		"CONVERT_LEASE":     "3s",
		"RABBITMQ_URL":      "", // the in-memory broker, unless o.rabbit
	}
	if o.rabbit {
		if env["RABBITMQ_URL"] = os.Getenv("RABBITMQ_URL"); env["RABBITMQ_URL"] == "" {
			return s, fmt.Errorf("RABBITMQ_URL is not set")
		}
	}
	maps.Copy(env, o.env)
	manifests, err := stacktest.Manifests(stacktest.Retries(retryBackoff, "linear", retries))
	if err != nil {
		return s, err
	}
	st, err := stacktest.New(context.Background(), dir, stacktest.Options{
		Env:       env,
		Logger:    slog.Default(),
		Instances: o.instances,
		External:  o.external,
		Manifests: manifests,
	})
	if err != nil {
		return s, err
	}
	s.Stack = st
	s.closers = append(s.closers, func() { st.Close() })
	return s, nil
}

// startBacking starts MySQL (MYSQL_DSN with a database of its own, or
// embedded), MongoDB (MONGODB_URI with a prefix of its own, or FerretDB) and
// an SMTP server, and fault proxies in front of them when proxied.
func (s *system) startBacking(proxied bool, dir string) error {
	suffix := stacktest.RandomHex(4)
	var err error
	if s.mail, err = mailtest.Start(); err != nil {
		return err
	}
	s.closers = append(s.closers, func() { s.mail.Close() })

	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		isolated, drop, err := stacktest.IsolatedDSN(dsn, "rel_"+suffix)
		if err != nil {
			return err
		}
		s.mysqlDirect = isolated
		s.closers = append(s.closers, drop)
	} else {
		m, err := standins.StartMySQL("127.0.0.1:0")
		if err != nil {
			return err
		}
		s.closers = append(s.closers, func() { m.Close() })
		s.mysqlDirect = m.DSN
	}
	if uri := os.Getenv("MONGODB_URI"); uri != "" {
		s.mongoDirect = uri
	} else {
		m, err := standins.StartMongoDB("127.0.0.1:0", filepath.Join(dir, "mongodb"))
		if err != nil {
			return err
		}
		s.closers = append(s.closers, func() { m.Close() })
		s.mongoDirect = m.URI
	}
	s.prefix = "rel" + suffix + "_"
	if s.mongo, err = mongo.Connect(options.Client().ApplyURI(s.mongoDirect).SetTimeout(time.Minute)); err != nil {
		return err
	}
	s.closers = append(s.closers, func() {
		ctx := context.Background()
		s.mongo.Database(s.prefix + "videos").Drop(ctx)
		s.mongo.Database(s.prefix + "mp3s").Drop(ctx)
		s.mongo.Disconnect(ctx)
	})

	s.mysqlDSN, s.mongoURI, s.smtpURL = s.mysqlDirect, s.mongoDirect, s.mail.URL
	if !proxied {
		return nil
	}
	s.proxies = map[string]*faultproxy.Proxy{}
	mysqlCfg, err := mysql.ParseDSN(s.mysqlDirect)
	if err != nil {
		return err
	}
	mongoURL, err := url.Parse(s.mongoDirect)
	if err != nil {
		return err
	}
	smtpURL, err := url.Parse(s.mail.URL)
	if err != nil {
		return err
	}
	for name, target := range map[string]string{"mysql": mysqlCfg.Addr, "mongodb": mongoURL.Host, "smtp": smtpURL.Host} {
		p, err := faultproxy.Start(target)
		if err != nil {
			return err
		}
		s.closers = append(s.closers, func() { p.Close() })
		s.proxies[name] = p
	}
	mysqlCfg.Addr = s.proxies["mysql"].Addr()
	mongoURL.Host = s.proxies["mongodb"].Addr()
	smtpURL.Host = s.proxies["smtp"].Addr()
	s.mysqlDSN, s.mongoURI, s.smtpURL = mysqlCfg.FormatDSN(), mongoURL.String(), smtpURL.String()
	return nil
}

func (s *system) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Retry budget of the suite's Triggers: linear backoff of 1 s, 10 retries,
// so a delivery is retried for 55 s before it is dead-lettered. That covers
// what the suite inflicts: a 10 s outage on top of MongoDB's 5 s server
// selection timeout, or a killed convert's claim (CONVERT_LEASE=3s) plus its
// restart. (knative/ gives convert 5 exponential retries from 2 s: 62 s.)
const (
	retryBackoff = "PT1S"
	retries      = 10
)

// --- the shared system of the quick tests ---

var shared struct {
	once sync.Once
	sys  *system
	dir  string
	err  error
	// wrappers that let tests see what upload, convert and notify were handed
	upload, convert *watchedHTTP
	notify          *watchedNotify
}

// Settings of the shared system: small limits so that the tests that need
// them stay quick.
const (
	sharedMaxUpload   = 1 << 20
	sharedUploadLimit = "5s" // UPLOAD_TIMEOUT
	sharedCacheTTL    = "1s" // VALIDATE_CACHE_TTL
)

// sharedSystem is one system for the quick tests, started on first use.
func sharedSystem(t testing.TB) *system {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "mp3c-reliability-")
		if shared.err != nil {
			return
		}
		shared.upload, shared.convert, shared.notify = watch(upload.New()), watch(convert.New()), newWatchedNotify()
		shared.sys, shared.err = startSystem(sysOptions{
			env: map[string]string{
				"MAX_UPLOAD_BYTES":      strconv.Itoa(sharedMaxUpload),
				"UPLOAD_TIMEOUT":        sharedUploadLimit,
				"VALIDATE_CACHE_TTL":    sharedCacheTTL,
				"LOGIN_MAX_FAILURES":    "1000", // bad-input tests fail logins on purpose
				"LOGIN_MAX_IP_FAILURES": "0",    // every test is the same client (127.0.0.1): see bruteforce_test.go
			},
			instances: map[string]any{"upload": shared.upload, "convert": shared.convert, "notify": shared.notify},
		}, shared.dir)
	})
	if shared.err != nil {
		t.Fatalf("starting the shared system: %v", shared.err)
	}
	return shared.sys
}

func closeShared() {
	if shared.sys != nil {
		shared.sys.close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	if media.dir != "" {
		os.RemoveAll(media.dir)
	}
}

// httpFunction is what convert and upload offer the host.
type httpFunction interface {
	Handle(http.ResponseWriter, *http.Request)
	Start(context.Context, map[string]string) error
	Stop(context.Context) error
	Ready(context.Context) (bool, error)
	Alive(context.Context) (bool, error)
}

// watchedHTTP is an HTTP function, telling the tests which requests it
// finished and what it answered: per CloudEvent id (Ce-Id), and in all.
type watchedHTTP struct {
	httpFunction
	mu       sync.Mutex
	byID     map[string][]int // event id -> the statuses answered, in order
	finished []int            // every status answered, in order
}

func watch(f httpFunction) *watchedHTTP {
	return &watchedHTTP{httpFunction: f, byID: map[string][]int{}}
}

func (w *watchedHTTP) Handle(rw http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
	w.httpFunction.Handle(sw, r)
	w.mu.Lock()
	defer w.mu.Unlock()
	if id := r.Header.Get("Ce-Id"); id != "" {
		w.byID[id] = append(w.byID[id], sw.status)
	}
	w.finished = append(w.finished, sw.status)
}

// answers returns what was answered to the deliveries of event id.
func (w *watchedHTTP) answers(id string) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.byID[id]...)
}

// count is how many requests have been answered so far.
func (w *watchedHTTP) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.finished)
}

// waitAnswer waits for the answer to request number n (0-based) and returns its status.
func (w *watchedHTTP) waitAnswer(t testing.TB, n int, within time.Duration) int {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		w.mu.Lock()
		if len(w.finished) > n {
			status := w.finished[n]
			w.mu.Unlock()
			return status
		}
		w.mu.Unlock()
	}
	t.Fatalf("request %d not answered within %s", n, within)
	return 0
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (upload and convert extend their deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// watchedNotify is notify, telling the tests which events it was handed and
// whether it asked for a retry.
type watchedNotify struct {
	*notify.Function
	mu      sync.Mutex
	handled map[string][]error // event id -> the results, in order
}

func newWatchedNotify() *watchedNotify {
	return &watchedNotify{Function: notify.New(), handled: map[string][]error{}}
}

func (w *watchedNotify) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	out, err := w.Function.Handle(ctx, e)
	w.mu.Lock()
	w.handled[e.ID()] = append(w.handled[e.ID()], err)
	w.mu.Unlock()
	return out, err
}

func (w *watchedNotify) deliveries(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.handled[id])
}

// total is how many events notify was handed.
func (w *watchedNotify) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, results := range w.handled {
		n += len(results)
	}
	return n
}

// results are notify's answers to the deliveries of event id (nil: done, no retry).
func (w *watchedNotify) results(id string) []error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]error(nil), w.handled[id]...)
}

// --- HTTP ---

// answer is an HTTP answer, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
	took   time.Duration
}

func (a answer) json() map[string]any {
	var m map[string]any
	json.Unmarshal(a.body, &m)
	return m
}

// errorMessage is the "error" of a JSON error answer ("" if there is none).
func (a answer) errorMessage() string {
	s, _ := a.json()["error"].(string)
	return s
}

func (a answer) String() string {
	if a.err != nil {
		return fmt.Sprintf("no answer after %s: %v", a.took.Round(time.Millisecond), a.err)
	}
	body := string(a.body)
	if len(body) > 300 {
		body = body[:300] + "..."
	}
	return fmt.Sprintf("%d %s", a.status, strings.TrimSpace(body))
}

// requestTimeout bounds every request of the suite: an answer that takes
// longer is a hang, and a failure.
const requestTimeout = 90 * time.Second

var httpClient = &http.Client{
	Timeout:   requestTimeout,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64, ResponseHeaderTimeout: requestTimeout},
}

// do sends a request to the front door, web (path), or to a full URL.
func (s *system) do(method, path, token string, body io.Reader, header ...string) answer {
	target := path
	if strings.HasPrefix(path, "/") {
		target = s.URL + path
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return answer{err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return send(httpClient, req)
}

func send(c *http.Client, req *http.Request) answer {
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b, err: err, took: time.Since(start)}
}

// login answers the token, or "" and the answer.
func (s *system) login(email, password string) (string, answer) {
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/login", nil)
	req.SetBasicAuth(email, password)
	a := send(httpClient, req)
	tok, _ := a.json()["access_token"].(string)
	return tok, a
}

// upload posts the file at path as multipart under name, streaming it.
func (s *system) upload(token, path, name string) answer {
	return s.uploadWith(httpClient, token, path, name)
}

// uploadWith is upload with another client (e.g. a longer timeout).
func (s *system) uploadWith(c *http.Client, token, path, name string) answer {
	f, err := os.Open(path)
	if err != nil {
		return answer{err: err}
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		defer f.Close()
		part, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = io.Copy(part, f)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequest(http.MethodPost, s.URL+"/upload", pr)
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	a := send(c, req)
	pr.Close()
	return a
}

// --- mail ---

var mailFID = regexp.MustCompile(`mp3converter download ([0-9a-f]{24})`)

// readyMails counts the "your MP3 is ready" emails per video_fid, and the other emails.
func readyMails(msgs []mailtest.Message) (perFID map[string]int, others int) {
	perFID = map[string]int{}
	for _, m := range msgs {
		text := strings.ReplaceAll(string(m.Data), "=\r\n", "") // quoted-printable soft breaks
		if match := mailFID.FindStringSubmatch(text); match != nil {
			perFID[match[1]]++
		} else {
			others++
		}
	}
	return perFID, others
}

// mailsAbout returns the emails that mention fid (ready: the fid; failed: the file name).
func mailsAbout(msgs []mailtest.Message, needle string) int {
	n := 0
	for _, m := range msgs {
		if strings.Contains(strings.ReplaceAll(string(m.Data), "=\r\n", ""), needle) {
			n++
		}
	}
	return n
}

// waitMails polls until at least n emails mention needle.
func (s *system) waitMails(t testing.TB, needle string, n int, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if mailsAbout(s.mail.All(), needle) >= n {
			return
		}
	}
	t.Fatalf("fewer than %d emails about %s within %s", n, needle, within)
}

// --- storage ---

// counts are the documents of the system's databases.
type counts struct {
	VideoFiles, VideoChunks, Jobs, MP3Files, MP3Chunks, Claims int64
}

func (s *system) counts(t testing.TB) counts {
	t.Helper()
	ctx := context.Background()
	videos, mp3s := s.mongo.Database(s.prefix+"videos"), s.mongo.Database(s.prefix+"mp3s")
	var c counts
	for _, q := range []struct {
		coll *mongo.Collection
		n    *int64
	}{
		{videos.Collection("fs.files"), &c.VideoFiles}, {videos.Collection("fs.chunks"), &c.VideoChunks},
		{videos.Collection("jobs"), &c.Jobs}, {videos.Collection("convert_claims"), &c.Claims},
		{mp3s.Collection("fs.files"), &c.MP3Files}, {mp3s.Collection("fs.chunks"), &c.MP3Chunks},
	} {
		n, err := q.coll.CountDocuments(ctx, bson.D{})
		if err != nil {
			t.Fatalf("counting %s: %v", q.coll.Name(), err)
		}
		*q.n = n
	}
	return c
}

// waitCounts polls until the counts equal want (what is asynchronous, such as
// the cleanup of an aborted upload, has finished) and fails the test if they
// do not within the bound.
func (s *system) waitCounts(t testing.TB, want counts, within time.Duration) {
	t.Helper()
	var got counts
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = s.counts(t); got == want {
			return
		}
	}
	t.Fatalf("storage holds %+v, want %+v", got, want)
}

// quiet waits until the system has nothing in flight (every job done or
// failed and its notification settled, no convert claim, the video of every
// done job deleted, chunks and all) and returns the counts then: the baseline
// of a test that must leave nothing behind.
func (s *system) quiet(t testing.TB) counts {
	t.Helper()
	videos := s.mongo.Database(s.prefix + "videos")
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		c := s.counts(t)
		files := map[bson.ObjectID]bool{}
		for _, f := range findAll[struct {
			ID bson.ObjectID `bson:"_id"`
		}](t, videos.Collection("fs.files"), bson.D{}, bson.D{{Key: "_id", Value: 1}}) {
			files[f.ID] = true
		}
		busy := c.Claims > 0 || s.strayChunks(t) > 0 // GridFS deletes the files document first, then the chunks
		for _, j := range s.jobs(t, bson.D{}) {
			if (j.State != "done" && j.State != "failed") || j.NotifyClaim != "" || (j.State == "done" && files[j.ID]) {
				busy = true
			}
		}
		if !busy && s.counts(t) == c { // and nothing moved while we looked
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the system is still busy after 2 minutes: %+v", c)
		}
	}
}

// strayChunks counts GridFS chunks whose file does not exist (the remains of
// an interrupted write), in both buckets. Call it when nothing is writing.
func (s *system) strayChunks(t testing.TB) int {
	t.Helper()
	stray := 0
	for _, db := range []string{"videos", "mp3s"} {
		d := s.mongo.Database(s.prefix + db)
		chunks := findAll[struct {
			FilesID bson.ObjectID `bson:"files_id"`
		}](t, d.Collection("fs.chunks"), bson.D{}, bson.D{{Key: "files_id", Value: 1}})
		files := findAll[struct {
			ID bson.ObjectID `bson:"_id"`
		}](t, d.Collection("fs.files"), bson.D{}, bson.D{{Key: "_id", Value: 1}})
		exists := map[bson.ObjectID]bool{}
		for _, f := range files {
			exists[f.ID] = true
		}
		for _, c := range chunks {
			if !exists[c.FilesID] {
				stray++
			}
		}
	}
	return stray
}

// job is what the suite reads of a jobs document.
type job struct {
	ID          bson.ObjectID `bson:"_id"`
	State       string        `bson:"state"`
	Size        int64         `bson:"size"`
	Attempts    int32         `bson:"attempts"`
	NotifyClaim string        `bson:"notify_claim"`
}

func (s *system) jobs(t testing.TB, filter bson.D) []job {
	return findAll[job](t, s.mongo.Database(s.prefix+"videos").Collection("jobs"), filter, nil)
}

// jobStates counts the jobs by state, and those whose notification is still claimed.
func (s *system) jobStates(t testing.TB) (states map[string]int, notifyInFlight int) {
	t.Helper()
	states = map[string]int{}
	for _, j := range s.jobs(t, bson.D{}) {
		states[j.State]++
		if j.NotifyClaim != "" {
			notifyInFlight++
		}
	}
	return states, notifyInFlight
}

// findAll returns the documents of coll that match filter, with projection
// (nil: whole documents), decoded as T.
func findAll[T any](t testing.TB, coll *mongo.Collection, filter, projection bson.D) []T {
	t.Helper()
	ctx := context.Background()
	opts := options.Find()
	if projection != nil {
		opts.SetProjection(projection)
	}
	var out []T
	cur, err := coll.Find(ctx, filter, opts)
	if err == nil {
		err = cur.All(ctx, &out)
	}
	if err != nil {
		t.Fatalf("reading %s.%s: %v", coll.Database().Name(), coll.Name(), err)
	}
	return out
}

// tally is a count per key, in key order: "202 x48, 503 x2" ("none" for no keys).
func tally[K cmp.Ordered](counts map[K]int) string {
	if len(counts) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(counts))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%v x%d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// --- RabbitMQ ---

// queueDepths are the messages ready in each queue of the topology.
func queueDepths(t testing.TB, url, prefix string) map[string]int {
	t.Helper()
	depths := map[string]int{}
	for _, q := range stacktest.QueueNames(prefix) {
		n, err := stacktest.QueueDepth(url, q)
		if err != nil {
			t.Fatalf("queue %s: %v", q, err)
		}
		depths[q[len(prefix+"mp3converter.default."):]] = n
	}
	return depths
}

// --- media (generated with ffmpeg's lavfi sources, once per process) ---

var media struct {
	mu    sync.Mutex
	dir   string
	files map[string]string
}

// mediaFile returns the path of a generated file, making it on first use.
func mediaFile(t testing.TB, name string, ffmpegArgs ...string) string {
	t.Helper()
	media.mu.Lock()
	defer media.mu.Unlock()
	if p, ok := media.files[name]; ok {
		return p
	}
	if media.dir == "" {
		dir, err := os.MkdirTemp("", "mp3c-reliability-media-")
		if err != nil {
			t.Fatal(err)
		}
		media.dir, media.files = dir, map[string]string{}
	}
	path := filepath.Join(media.dir, name)
	stacktest.FFmpeg(t, path, ffmpegArgs...)
	media.files[name] = path
	return path
}

// clip is stacktest's clip of that many seconds, with sound.
func clip(t testing.TB, seconds int) string {
	return mediaFile(t, fmt.Sprintf("clip%d.mp4", seconds), stacktest.ClipArgs(seconds, true)...)
}

// probeAudio reads an audio file's codec, duration and loudest level (dB).
func probeAudio(t testing.TB, path string) (codec string, seconds, maxVolume float64) {
	t.Helper()
	codec, seconds = stacktest.Probe(t, path)
	vol, _ := exec.Command("ffmpeg", "-nostdin", "-hide_banner", "-i", path, "-af", "volumedetect", "-f", "null", "-").CombinedOutput()
	maxVolume = -1000
	if m := regexp.MustCompile(`max_volume: (-?[0-9.]+) dB`).FindSubmatch(vol); m != nil {
		maxVolume, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	return codec, seconds, maxVolume
}

// --- results ---

// record returns the Result of a test case; it is written (with whether the
// test failed) when the test ends.
func record(t *testing.T, what string) *Result {
	r := &Result{Case: what, Test: t.Name()}
	t.Cleanup(func() {
		r.Failed = t.Failed()
		if r.Failed && r.Failures == 0 {
			r.Failures = 1
		}
		t.Logf("result: %+v", *r)
		if path := os.Getenv(EnvResults); path != "" {
			if err := Append(path, *r); err != nil {
				t.Errorf("recording the result: %v", err)
			}
		}
	})
	return r
}

func (r *Result) figure(format string, args ...any) {
	r.Figures = append(r.Figures, fmt.Sprintf(format, args...))
}
