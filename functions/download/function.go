// Package function is the download function: it streams converted MP3s out of GridFS (with
// Range and conditional requests) and reports conversion jobs, to their owner or an admin.
package function

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Function is the download function. Its zero value is not usable: call New, then Start.
type Function struct {
	log   *slog.Logger
	state atomic.Pointer[state] // nil until Start has finished
}

// state is everything Start builds from the configuration.
type state struct {
	log         *slog.Logger
	mongo       *mongo.Client
	videos      *mongo.Database
	mp3s        *mongo.Database
	auth        *authClient
	publicURL   string
	timeout     time.Duration
	jobsIndexed atomic.Bool
}

// New returns a download function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: slog.Default().With("function", "download")}
}

// Handle serves GET|HEAD /download?fid=, /jobs/{video_fid} and /jobs.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	s := f.state.Load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, "starting, try again")
		return
	}
	// func-go's server cuts responses after 30 s; a big download over a slow link takes longer.
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		f.log.Warn("cannot extend write deadline", "err", err)
	}

	// Route on the last path segments so that the function works behind any prefix.
	p := strings.TrimSuffix(r.URL.Path, "/")
	var serve func(http.ResponseWriter, *http.Request, identity)
	switch {
	case p == "" || path.Base(p) == "download":
		serve = s.download
	case path.Base(p) == "jobs":
		serve = s.listJobs
	case path.Base(path.Dir(p)) == "jobs":
		serve = func(w http.ResponseWriter, r *http.Request, who identity) { s.getJob(w, r, who, path.Base(p)) }
	default:
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "use GET or HEAD")
		return
	}
	who, aerr := s.auth.identify(r.Context(), r.Header.Get("Authorization"))
	if aerr != nil {
		aerr.write(w)
		return
	}
	// Answers depend on who asks: shared caches must not keep them.
	w.Header().Set("Cache-Control", "private")
	w.Header().Add("Vary", "Authorization")
	serve(w, r, who)
}

// Start reads the configuration. It fails only on bad configuration, never because MongoDB or
// validate is down: both are reached per request.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	mongoURI := cfg["MONGODB_URI"]
	if mongoURI == "" {
		return errors.New("MONGODB_URI is not set")
	}
	validateURL := cfg["VALIDATE_URL"]
	if err := checkURL("VALIDATE_URL", validateURL); err != nil {
		return err
	}
	publicURL := strings.TrimRight(cfg["PUBLIC_URL"], "/")
	if publicURL != "" {
		if err := checkURL("PUBLIC_URL", publicURL); err != nil {
			return err
		}
	}
	timeout, err := cfgDuration(cfg, "DOWNLOAD_TIMEOUT", time.Hour)
	if err != nil {
		return err
	}
	ttl, err := cfgDuration(cfg, "VALIDATE_CACHE_TTL", 30*time.Second)
	if err != nil {
		return err
	}
	// Defaults first, so that options spelled in the URI win.
	opts := options.Client().
		SetServerSelectionTimeout(5 * time.Second).
		SetConnectTimeout(5 * time.Second).
		ApplyURI(mongoURI)
	client, err := mongo.Connect(opts) // does not dial
	if err != nil {
		return fmt.Errorf("MONGODB_URI: %w", err)
	}
	prefix := cfg["MONGODB_DB_PREFIX"]
	f.state.Store(&state{
		log:       f.log,
		mongo:     client,
		videos:    client.Database(prefix + "videos"),
		mp3s:      client.Database(prefix + "mp3s"),
		auth:      newAuthClient(validateURL, ttl),
		publicURL: publicURL,
		timeout:   timeout,
	})
	f.log.Info("started", "download_timeout", timeout.String())
	return nil
}

// Stop closes the MongoDB connections.
func (f *Function) Stop(ctx context.Context) error {
	s := f.state.Swap(nil)
	if s == nil {
		return nil
	}
	return s.mongo.Disconnect(ctx)
}

// Ready reports whether Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	return f.state.Load() != nil, nil
}

// Alive always reports true: the process serves (503 while a backing service is down).
func (f *Function) Alive(ctx context.Context) (bool, error) {
	return true, nil
}

const (
	queryTimeout = 10 * time.Second
	msgStorage   = "storage unavailable, try again"
	msgNotFound  = "not found" // also for what exists but is not the caller's
	defaultLimit = 20
	maxLimit     = 100
	mp3MediaType = "audio/mpeg"
)

// fileDoc is a GridFS files document of the mp3s bucket.
type fileDoc struct {
	ID         bson.ObjectID `bson:"_id"`
	Length     int64         `bson:"length"`
	UploadDate time.Time     `bson:"uploadDate"`
	Filename   string        `bson:"filename"`
	Metadata   struct {
		Username string `bson:"username"`
	} `bson:"metadata"`
}

// download streams an MP3, honouring a single Range, If-Range and the validators.
func (s *state) download(w http.ResponseWriter, r *http.Request, who identity) {
	var doc fileDoc
	fid, ok := s.findOwned(w, r, s.mp3s.Collection("fs.files"), r.URL.Query().Get("fid"), who, &doc)
	if !ok {
		return
	}

	size := doc.Length
	// Strong: a GridFS file never changes, and its id, length and upload date identify it.
	etag := fmt.Sprintf(`"%s-%x-%x"`, fid.Hex(), size, doc.UploadDate.UnixMilli())
	modified := doc.UploadDate.UTC().Truncate(time.Second)
	h := w.Header()
	setValidators := func() {
		h.Set("ETag", etag)
		h.Set("Last-Modified", modified.Format(http.TimeFormat))
		h.Set("Accept-Ranges", "bytes")
	}

	switch checkPreconditions(r, etag, modified) {
	case http.StatusPreconditionFailed:
		writeError(w, http.StatusPreconditionFailed, "precondition failed")
		return
	case http.StatusNotModified:
		setValidators()
		w.WriteHeader(http.StatusNotModified)
		return
	}

	status, start, length := http.StatusOK, int64(0), size
	if spec := r.Header.Get("Range"); spec != "" && ifRangeHolds(r.Header.Get("If-Range"), etag, modified) {
		rs, rl, res := parseRange(spec, size)
		switch res {
		case rangeUnsatisfiable:
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			writeError(w, http.StatusRequestedRangeNotSatisfiable, "range not satisfiable")
			return
		case rangeOK:
			status, start, length = http.StatusPartialContent, rs, rl
		}
	}

	name := doc.Filename
	if name == "" {
		name = fid.Hex() + ".mp3"
	}
	disposition := mime.FormatMediaType("attachment", map[string]string{"filename": name})
	if disposition == "" {
		disposition = mime.FormatMediaType("attachment", map[string]string{"filename": fid.Hex() + ".mp3"})
	}

	var body io.Reader
	if r.Method != http.MethodHead && length > 0 {
		// Open before answering, so that a failure is still a clean 503. The stream lives as long as
		// the response: a client that hangs up cancels it.
		sctx, scancel := context.WithTimeout(r.Context(), s.timeout)
		defer scancel()
		ds, err := s.mp3s.GridFSBucket().OpenDownloadStream(sctx, fid)
		if errors.Is(err, mongo.ErrFileNotFound) {
			writeError(w, http.StatusNotFound, msgNotFound)
			return
		}
		if err != nil {
			s.storageError(w, "open mp3", err)
			return
		}
		defer ds.Close()
		if start > 0 {
			// No Seek in GridFS: Skip reads (and discards) whole chunks up to start.
			if n, err := ds.Skip(start); err != nil || n != start {
				s.storageError(w, "skip in mp3", fmt.Errorf("skipped %d of %d bytes: %v", n, start, err))
				return
			}
		}
		body = ds
	}

	setValidators()
	if status == http.StatusPartialContent {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	}
	h.Set("Content-Type", mp3MediaType)
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	h.Set("Content-Disposition", disposition)
	w.WriteHeader(status)
	if body == nil {
		return
	}
	if n, err := io.CopyN(w, body, length); err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("download cut short", "mp3_fid", fid.Hex(), "sent", n, "of", length, "err", err)
		}
	}
}

// job is a document of the jobs collection, and what clients see of it.
type job struct {
	ID              bson.ObjectID `bson:"_id" json:"-"`
	VideoFID        string        `bson:"-" json:"video_fid"`
	Username        string        `bson:"username" json:"-"`
	Filename        string        `bson:"filename" json:"filename"`
	ContentType     string        `bson:"content_type" json:"content_type"`
	Size            int64         `bson:"size" json:"size"`
	State           string        `bson:"state" json:"state"`
	Reason          string        `bson:"reason" json:"reason"`
	MP3FID          string        `bson:"mp3_fid" json:"mp3_fid"`
	DurationSeconds float64       `bson:"duration_seconds" json:"duration_seconds"`
	Attempts        int32         `bson:"attempts" json:"attempts"`
	CreatedAt       time.Time     `bson:"created_at" json:"created_at"`
	UpdatedAt       time.Time     `bson:"updated_at" json:"updated_at"`
	DownloadURL     string        `bson:"-" json:"download_url,omitempty"`
}

// view fills in what clients see besides the stored fields.
func (s *state) view(j *job) *job {
	j.VideoFID = j.ID.Hex()
	j.CreatedAt, j.UpdatedAt = j.CreatedAt.UTC(), j.UpdatedAt.UTC()
	if j.State == "done" && j.MP3FID != "" {
		j.DownloadURL = s.publicURL + "/download?fid=" + url.QueryEscape(j.MP3FID)
	}
	return j
}

// getJob answers GET /jobs/{video_fid}.
func (s *state) getJob(w http.ResponseWriter, r *http.Request, who identity, hexID string) {
	var j job
	if _, ok := s.findOwned(w, r, s.videos.Collection("jobs"), hexID, who, &j); !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.view(&j))
}

// listJobs answers GET /jobs?limit=&before=&all=: the caller's jobs newest first (an admin's
// too; everyone's with all=true), paged by the last video_fid seen.
func (s *state) listJobs(w http.ResponseWriter, r *http.Request, who identity) {
	q := r.URL.Query()
	limit := defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1..%d", maxLimit))
			return
		}
		limit = n
	}
	filter := bson.D{}
	if all, _ := strconv.ParseBool(q.Get("all")); !all || !who.Admin {
		filter = append(filter, bson.E{Key: "username", Value: who.Username})
	}
	if v := q.Get("before"); v != "" {
		before, ok := parseFID(w, v)
		if !ok {
			return
		}
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: before}}})
	}

	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	jobs := s.videos.Collection("jobs")
	if !s.jobsIndexed.Load() {
		// Best effort, once per process: lists stay fast as the collection grows.
		_, err := jobs.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "username", Value: 1}, {Key: "_id", Value: -1}}})
		if err == nil {
			s.jobsIndexed.Store(true)
		}
	}
	// ObjectIDs grow with time: _id descending is newest first, and a stable cursor.
	cur, err := jobs.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetLimit(int64(limit)+1))
	if err != nil {
		s.storageError(w, "list jobs", err)
		return
	}
	docs := []*job{}
	if err := cur.All(ctx, &docs); err != nil {
		s.storageError(w, "list jobs", err)
		return
	}
	next := ""
	if len(docs) > limit {
		docs = docs[:limit]
		next = docs[limit-1].ID.Hex()
	}
	for _, j := range docs {
		s.view(j)
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": docs, "next": next})
}

func (s *state) storageError(w http.ResponseWriter, op string, err error) {
	s.log.Error("storage error", "op", op, "err", err)
	writeError(w, http.StatusServiceUnavailable, msgStorage)
}

// owned is a document with an owner: a GridFS files document or a job.
type owned interface{ owner() string }

func (d *fileDoc) owner() string { return d.Metadata.Username }
func (j *job) owner() string     { return j.Username }

// findOwned decodes the document of coll whose _id is hexID into doc, if who may see it.
// Otherwise it answers: 400 for a malformed id, 404 alike for missing and not theirs, 503.
func (s *state) findOwned(w http.ResponseWriter, r *http.Request, coll *mongo.Collection, hexID string, who identity, doc owned) (bson.ObjectID, bool) {
	fid, ok := parseFID(w, hexID)
	if !ok {
		return fid, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: fid}}).Decode(doc)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments) || (err == nil && !who.mayRead(doc.owner())):
		writeError(w, http.StatusNotFound, msgNotFound)
	case err != nil:
		s.storageError(w, "find in "+coll.Database().Name()+"."+coll.Name(), err)
	default:
		return fid, true
	}
	return fid, false
}

// mayRead tells whether the caller may see something owned by owner.
func (id identity) mayRead(owner string) bool {
	return id.Admin || (owner != "" && owner == id.Username)
}

// parseFID parses a hex ObjectID, or answers 400.
func parseFID(w http.ResponseWriter, v string) (bson.ObjectID, bool) {
	fid, err := bson.ObjectIDFromHex(v)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed id: want 24 hex digits")
		return fid, false
	}
	return fid, true
}

// checkPreconditions evaluates If-Match, If-Unmodified-Since, If-None-Match and
// If-Modified-Since in the order of RFC 9110 section 13.2.2: 412, 304, or 0 to go on.
func checkPreconditions(r *http.Request, etag string, modified time.Time) int {
	if im := r.Header.Get("If-Match"); im != "" {
		if !etagListMatches(im, etag, false) {
			return http.StatusPreconditionFailed
		}
	} else if ius := r.Header.Get("If-Unmodified-Since"); ius != "" {
		if t, err := http.ParseTime(ius); err == nil && modified.After(t) {
			return http.StatusPreconditionFailed
		}
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if etagListMatches(inm, etag, true) {
			return http.StatusNotModified
		}
	} else if ims := r.Header.Get("If-Modified-Since"); ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !modified.After(t) {
			return http.StatusNotModified
		}
	}
	return 0
}

// etagListMatches compares etag with a header's list ("*" matches anything); weak comparison
// ignores W/ prefixes.
func etagListMatches(list, etag string, weak bool) bool {
	for _, candidate := range strings.Split(list, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" {
			return true
		}
		if weak {
			candidate = strings.TrimPrefix(candidate, "W/")
		}
		if candidate == etag {
			return true
		}
	}
	return false
}

// ifRangeHolds tells whether a Range may be honoured: no If-Range, or one that names the
// current representation by its strong ETag or its exact modification date.
func ifRangeHolds(ifRange, etag string, modified time.Time) bool {
	switch {
	case ifRange == "":
		return true
	case strings.HasPrefix(ifRange, `"`) || strings.HasPrefix(ifRange, "W/"):
		return ifRange == etag
	default:
		t, err := http.ParseTime(ifRange)
		return err == nil && t.Equal(modified)
	}
}

type rangeResult int

const (
	rangeIgnored       rangeResult = iota // malformed or several ranges: send everything
	rangeOK                               // one satisfiable range
	rangeUnsatisfiable                    // 416
)

// parseRange reads a Range header for a representation of size bytes. It honours one byte
// range ("a-b", "a-" or "-n"); several ranges are answered with the whole body.
func parseRange(spec string, size int64) (start, length int64, res rangeResult) {
	unit, set, ok := strings.Cut(spec, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") || strings.Contains(set, ",") {
		return 0, 0, rangeIgnored
	}
	first, last, ok := strings.Cut(strings.TrimSpace(set), "-")
	if !ok {
		return 0, 0, rangeIgnored
	}
	digits := func(s string) (int64, bool) {
		if s == "" || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil { // beyond int64: larger than any file
			return 1<<63 - 1, true
		}
		return n, true
	}
	if first == "" { // suffix: the last n bytes
		n, ok := digits(last)
		if !ok {
			return 0, 0, rangeIgnored
		}
		if n == 0 || size == 0 {
			return 0, 0, rangeUnsatisfiable
		}
		n = min(n, size)
		return size - n, n, rangeOK
	}
	a, ok := digits(first)
	if !ok {
		return 0, 0, rangeIgnored
	}
	b := size - 1
	if last != "" {
		if b, ok = digits(last); !ok || b < a {
			return 0, 0, rangeIgnored
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, rangeUnsatisfiable
	}
	return a, b - a + 1, rangeOK
}

// httpError is an answer to the client plus, for the log, what caused it.
type httpError struct {
	status  int
	msg     string
	cause   error
	wwwAuth string
}

func (e *httpError) write(w http.ResponseWriter) {
	if e.wwwAuth != "" {
		w.Header().Set("WWW-Authenticate", e.wwwAuth)
	}
	writeError(w, e.status, e.msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func checkURL(key, v string) error {
	if v == "" {
		return fmt.Errorf("%s is not set", key)
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: %q is not an http(s) URL", key, v)
	}
	return nil
}

func cfgDuration(cfg map[string]string, key string, def time.Duration) (time.Duration, error) {
	v := cfg[key]
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is not a duration such as 30s or 1h", key, v)
	}
	return d, nil
}
