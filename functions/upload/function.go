// Package function is the upload function: it streams a video (or audio) file into GridFS,
// records its conversion job and announces it with a dev.mp3converter.video.uploaded CloudEvent.
package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Function is the upload function. Its zero value is not usable: call New, then Start.
type Function struct {
	log   *slog.Logger
	state atomic.Pointer[state] // nil until Start has finished
}

// state is everything Start builds from the configuration.
type state struct {
	log       *slog.Logger
	mongo     *mongo.Client
	videos    *mongo.Database
	auth      *authClient
	events    cloudevents.Client
	publicURL string
	maxBytes  int64
	timeout   time.Duration
	slots     chan struct{} // one per upload being stored (UPLOAD_CONCURRENCY)
}

// New returns an upload function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: slog.Default().With("function", "upload")}
}

// Handle serves POST /upload: multipart/form-data with exactly one file part, or a raw
// video/*, audio/* or application/octet-stream body named by ?filename=.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	s := f.state.Load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, "starting, try again")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	who, aerr := s.auth.identify(r.Context(), r.Header.Get("Authorization"))
	if aerr != nil {
		w.Header().Set("Connection", "close") // don't wait for a body we will not read
		aerr.write(w)
		return
	}
	if r.ContentLength > s.maxBytes {
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("upload larger than %d bytes", s.maxBytes))
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		w.Header().Set("Retry-After", "5")
		refuse(w, http.StatusServiceUnavailable, "too many uploads at once, try again in a few seconds")
		return
	}
	// func-go's server cuts requests after 30 s; a big upload legitimately takes
	// longer, so an identified caller gets UPLOAD_TIMEOUT to send the body, and
	// a minute more to hear the answer (also when the body was cut off).
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(s.timeout)
	if err := rc.SetReadDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
		f.log.Warn("cannot extend read deadline", "err", err)
	}
	if err := rc.SetWriteDeadline(deadline.Add(time.Minute)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		f.log.Warn("cannot extend write deadline", "err", err)
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.maxBytes)

	src, herr := openSource(r)
	if herr != nil {
		herr.write(w)
		return
	}
	fid, herr := s.store(r.Context(), who.Username, src)
	if herr != nil {
		if herr.status >= 500 {
			f.log.Error("upload failed", "user", who.Username, "status", herr.status, "err", herr.cause)
		} else {
			f.log.Info("upload rejected", "user", who.Username, "status", herr.status, "reason", herr.msg, "err", herr.cause)
		}
		herr.write(w)
		return
	}

	statusURL := s.publicURL + "/jobs/" + fid.Hex()
	f.log.Info("upload accepted", "user", who.Username, "video_fid", fid.Hex(), "filename", src.name, "content_type", src.contentType, "size", src.size)
	w.Header().Set("Location", statusURL)
	writeJSON(w, http.StatusAccepted, map[string]string{"video_fid": fid.Hex(), "status_url": statusURL})
}

// Start reads the configuration. It fails only on bad configuration, never because a backing
// service is down: MongoDB is dialled lazily, validate and the broker per request.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	mongoURI := cfg["MONGODB_URI"]
	if mongoURI == "" {
		return errors.New("MONGODB_URI is not set")
	}
	validateURL := cfg["VALIDATE_URL"]
	if err := checkURL("VALIDATE_URL", validateURL); err != nil {
		return err
	}
	sink := cfg["K_SINK"]
	if err := checkURL("K_SINK", sink); err != nil {
		return fmt.Errorf("%w (the broker ingress; a SinkBinding sets it on the cluster)", err)
	}
	publicURL := strings.TrimRight(cfg["PUBLIC_URL"], "/")
	if publicURL != "" {
		if err := checkURL("PUBLIC_URL", publicURL); err != nil {
			return err
		}
	}
	maxBytes, err := cfgInt64(cfg, "MAX_UPLOAD_BYTES", 2<<30)
	if err != nil {
		return err
	}
	timeout, err := cfgDuration(cfg, "UPLOAD_TIMEOUT", time.Hour)
	if err != nil {
		return err
	}
	ttl, err := cfgDuration(cfg, "VALIDATE_CACHE_TTL", 30*time.Second)
	if err != nil {
		return err
	}
	// The driver's upload stream buffers 16 MiB and more per upload: bound
	// how many are stored at once so memory is bounded too.
	concurrency, err := cfgInt64(cfg, "UPLOAD_CONCURRENCY", 4)
	if err != nil || concurrency < 1 {
		return fmt.Errorf("UPLOAD_CONCURRENCY must be a positive integer, got %q", cfg["UPLOAD_CONCURRENCY"])
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
	proto, err := cehttp.New(cehttp.WithTarget(sink))
	if err != nil {
		_ = client.Disconnect(ctx)
		return fmt.Errorf("K_SINK: %w", err)
	}
	events, err := cloudevents.NewClient(proto)
	if err != nil {
		_ = client.Disconnect(ctx)
		return fmt.Errorf("cloudevents client: %w", err)
	}

	f.state.Store(&state{
		log:       f.log,
		mongo:     client,
		videos:    client.Database(cfg["MONGODB_DB_PREFIX"] + "videos"),
		auth:      newAuthClient(validateURL, ttl),
		events:    events,
		publicURL: publicURL,
		slots:     make(chan struct{}, concurrency),
		maxBytes:  maxBytes,
		timeout:   timeout,
	})
	f.log.Info("started", "max_upload_bytes", maxBytes, "upload_timeout", timeout.String())
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
	eventType      = "dev.mp3converter.video.uploaded"
	eventSource    = "/functions/upload"
	chunkSize      = 128 * 1024 // FerretDB needs chunks below the 255 KiB default for big files
	sniffLen       = 512        // what http.DetectContentType looks at
	maxNameBytes   = 255
	sendAttempts   = 3
	sendTimeout    = 10 * time.Second // one delivery attempt to the broker
	storageTimeout = 30 * time.Second // one job insert or one cleanup
	msgStorage     = "storage unavailable, try again"
)

// source is the file being uploaded, positioned at its first byte.
type source struct {
	name        string
	contentType string
	head        []byte       // the first bytes, read to sniff the type
	body        *bodyReader  // the rest
	finish      func() error // multipart: reads the rest of the form, fails on a second file part
	size        int64
}

// bodyReader remembers why reading the request failed (io.EOF is no failure), to tell a client
// error from a storage one.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// openSource decides between a multipart form and a raw body, finds the file, reads its
// first bytes and rejects what is plainly not media. It writes nothing to storage.
func openSource(r *http.Request) (*source, *httpError) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, &httpError{status: http.StatusUnsupportedMediaType, msg: "send multipart/form-data or a video/*, audio/* or application/octet-stream body"}
	}
	var (
		name, declared string
		body           io.Reader
		finish         func() error
	)
	switch {
	case mediaType == "multipart/form-data":
		mr, err := r.MultipartReader()
		if err != nil {
			return nil, &httpError{status: http.StatusBadRequest, msg: "malformed multipart body", cause: err}
		}
		part, err := nextFilePart(mr)
		if errors.Is(err, io.EOF) {
			return nil, &httpError{status: http.StatusBadRequest, msg: "no file part in the form"}
		}
		if err != nil {
			return nil, bodyError(err)
		}
		name, declared, body = part.FileName(), part.Header.Get("Content-Type"), part
		finish = func() error {
			_, err := nextFilePart(mr)
			switch {
			case errors.Is(err, io.EOF):
				return nil
			case err != nil:
				return err
			default:
				return errSecondFile
			}
		}
	case mediaType == "application/octet-stream" || isMedia(mediaType):
		name, declared, body = r.URL.Query().Get("filename"), mediaType, r.Body
	default:
		return nil, &httpError{status: http.StatusUnsupportedMediaType, msg: "content type " + mediaType + " is not a video or audio type"}
	}

	br := &bodyReader{r: body}
	head := make([]byte, sniffLen)
	n, _ := io.ReadFull(br, head) // a short file ends the read early: only br.err is a failure
	if br.err != nil {
		return nil, bodyError(br.err)
	}
	if n == 0 {
		return nil, &httpError{status: http.StatusBadRequest, msg: "the file is empty"}
	}
	head = head[:n]
	sniffed := http.DetectContentType(head)
	declaredType, _, _ := mime.ParseMediaType(declared)
	if notMedia(sniffed) || notMedia(declaredType) {
		return nil, &httpError{status: http.StatusUnsupportedMediaType, msg: "not a video or audio file (looks like " + mediaTypeOf(sniffed) + ")"}
	}

	name = cleanName(name)
	contentType := "application/octet-stream"
	for _, t := range []string{declaredType, mime.TypeByExtension(extOf(name)), sniffed} {
		if t = mediaTypeOf(t); isMedia(t) {
			contentType = t
			break
		}
	}
	if name == "" {
		name = "upload" + extFor(contentType)
	}
	return &source{
		name:        name,
		contentType: contentType,
		head:        head,
		body:        br,
		finish:      finish,
	}, nil
}

var errSecondFile = errors.New("more than one file part")

// nextFilePart skips form fields and returns the next part that carries a filename.
func nextFilePart(mr *multipart.Reader) (*multipart.Part, error) {
	for {
		part, err := mr.NextPart()
		if err != nil {
			return nil, err
		}
		if part.FileName() != "" {
			return part, nil
		}
		if _, err := io.Copy(io.Discard, part); err != nil {
			return nil, err
		}
	}
}

// store streams src into GridFS, inserts the job and publishes the event. On any failure it
// removes whatever it wrote.
func (s *state) store(ctx context.Context, username string, src *source) (bson.ObjectID, *httpError) {
	fid := bson.NewObjectID()
	bucket := s.videos.GridFSBucket() // per request: a bucket is not safe for concurrent uploads
	// The stream outlives a client that hangs up, so that Abort can still delete its chunks.
	streamCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	up, err := bucket.OpenUploadStreamWithID(streamCtx, fid, src.name,
		options.GridFSUpload().SetChunkSizeBytes(chunkSize).SetMetadata(bson.D{
			{Key: "username", Value: username},
			{Key: "filename", Value: src.name},
			{Key: "content_type", Value: src.contentType},
		}))
	if err != nil {
		return fid, &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
	}

	n, err := io.Copy(up, io.MultiReader(bytes.NewReader(src.head), src.body))
	if err == nil && src.finish != nil {
		if err = src.finish(); err != nil {
			src.body.err = err
		}
	}
	if err != nil {
		if aerr := up.Abort(); aerr != nil {
			s.cleanup(ctx, fid, false) // Abort could not delete its chunks: try once more
		}
		switch {
		case errors.Is(err, errSecondFile):
			return fid, &httpError{status: http.StatusBadRequest, msg: "send exactly one file part"}
		case src.body.err != nil:
			return fid, bodyError(src.body.err)
		default:
			return fid, &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
		}
	}
	if err := up.Close(); err != nil {
		s.cleanup(ctx, fid, false)
		return fid, &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
	}
	src.size = n

	now := time.Now().UTC().Truncate(time.Millisecond)
	jctx, jcancel := context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
	defer jcancel()
	_, err = s.videos.Collection("jobs").InsertOne(jctx, bson.D{
		{Key: "_id", Value: fid},
		{Key: "username", Value: username},
		{Key: "filename", Value: src.name},
		{Key: "content_type", Value: src.contentType},
		{Key: "size", Value: n},
		{Key: "state", Value: "uploaded"},
		{Key: "reason", Value: ""},
		{Key: "mp3_fid", Value: ""},
		{Key: "attempts", Value: int32(0)},
		{Key: "created_at", Value: now},
		{Key: "updated_at", Value: now},
	})
	if err != nil {
		s.cleanup(ctx, fid, true)
		return fid, &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
	}

	if err := s.publish(ctx, fid, username, src); err != nil {
		s.cleanup(ctx, fid, true)
		return fid, &httpError{status: http.StatusServiceUnavailable, msg: "event broker unavailable, try again", cause: err}
	}
	return fid, nil
}

// publish sends the video.uploaded event and waits for the broker's ACK, retrying what may
// be transient (transport errors, 5xx, 429) with a short exponential backoff.
func (s *state) publish(ctx context.Context, fid bson.ObjectID, username string, src *source) error {
	e := cloudevents.NewEvent()
	e.SetID(fid.Hex())
	e.SetType(eventType)
	e.SetSource(eventSource)
	e.SetSubject(fid.Hex())
	e.SetTime(time.Now().UTC())
	if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{
		"video_fid":    fid.Hex(),
		"username":     username,
		"filename":     src.name,
		"content_type": src.contentType,
		"size":         src.size,
	}); err != nil {
		return err
	}

	backoff := 100 * time.Millisecond
	var res error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, sendTimeout)
		res = s.events.Send(actx, e)
		cancel()
		if cloudevents.IsACK(res) {
			return nil
		}
		var hr *cehttp.Result
		if cloudevents.ResultAs(res, &hr) && hr.StatusCode < 500 && hr.StatusCode != http.StatusTooManyRequests {
			return res // the broker refuses this event: retrying will not help
		}
		if attempt == sendAttempts {
			return res
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after: %v)", ctx.Err(), res)
		case <-t.C:
		}
		backoff *= 2
	}
}

// cleanup deletes what a failed upload left: its chunks, its files document, its job.
func (s *state) cleanup(ctx context.Context, fid bson.ObjectID, job bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
	defer cancel()
	var errs []error
	if job {
		_, err := s.videos.Collection("jobs").DeleteOne(ctx, bson.D{{Key: "_id", Value: fid}})
		errs = append(errs, err)
	}
	_, err := s.videos.Collection("fs.files").DeleteOne(ctx, bson.D{{Key: "_id", Value: fid}})
	errs = append(errs, err)
	_, err = s.videos.Collection("fs.chunks").DeleteMany(ctx, bson.D{{Key: "files_id", Value: fid}})
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		s.log.Error("cleanup failed: orphaned upload", "video_fid", fid.Hex(), "err", err)
	}
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

// bodyError maps a failure to read the request body: too large, or the client's fault.
func bodyError(err error) *httpError {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("upload larger than %d bytes", tooBig.Limit), cause: err}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &httpError{status: http.StatusRequestTimeout, msg: "the upload took longer than the server allows (UPLOAD_TIMEOUT)", cause: err}
	}
	return &httpError{status: http.StatusBadRequest, msg: "could not read the upload (malformed or interrupted body)", cause: err}
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

// refuse answers before any of the body is read: closing the connection
// spares the server from reading (and the client from sending) the body.
// Refusals after the body has started (sniffing, parts, size) keep the
// connection: the client is mid-send, and a close could cut it off before it
// reads the answer.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Connection", "close")
	writeError(w, status, msg)
}

// mediaTypeOf strips parameters: "text/plain; charset=utf-8" -> "text/plain".
func mediaTypeOf(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}

func isMedia(mediaType string) bool {
	return strings.HasPrefix(mediaType, "video/") || strings.HasPrefix(mediaType, "audio/") || mediaType == "application/ogg"
}

// notMedia reports types that certainly hold no audio track. Unknown binary passes: ffmpeg decides.
func notMedia(ct string) bool {
	mt := mediaTypeOf(ct)
	for _, prefix := range []string{"text/", "image/", "font/", "model/", "message/"} {
		if strings.HasPrefix(mt, prefix) {
			return true
		}
	}
	switch mt {
	case "application/pdf", "application/postscript", "application/json", "application/xml",
		"application/javascript", "application/zip", "application/gzip", "application/x-gzip",
		"application/x-rar-compressed", "application/vnd.rar", "application/x-7z-compressed",
		"application/x-tar", "application/x-bzip2", "application/x-xz", "application/zstd",
		"application/wasm", "application/vnd.ms-fontobject", "application/msword", "application/rtf":
		return true
	}
	return strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml") || strings.HasSuffix(mt, "+zip") ||
		strings.HasPrefix(mt, "application/vnd.openxmlformats") || strings.HasPrefix(mt, "application/vnd.oasis")
}

// cleanName reduces a client-supplied name to a safe base name of at most 255 bytes ("" if nothing is left).
func cleanName(name string) string {
	name = strings.ToValidUTF8(name, "")
	name = strings.Map(func(r rune) rune {
		// control characters, and the bidi controls that make a name display as another
		if unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f {
			return -1
		}
		return r
	}, name)
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSpace(name)
	if name == "." || name == ".." {
		return ""
	}
	if len(name) <= maxNameBytes {
		return name
	}
	ext := extOf(name)
	if len(ext) > 16 {
		ext = ""
	}
	stem := name[:maxNameBytes-len(ext)]
	for !utf8.ValidString(stem) { // do not cut a rune in half
		stem = stem[:len(stem)-1]
	}
	return stem + ext
}

func extOf(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || strings.ContainsAny(name[i:], " ") {
		return ""
	}
	return name[i:]
}

// extFor picks a file extension for a content type, for uploads that came without a name.
func extFor(contentType string) string {
	switch contentType {
	case "video/mp4":
		return ".mp4"
	case "video/webm":
		return ".webm"
	case "video/x-matroska":
		return ".mkv"
	case "video/quicktime":
		return ".mov"
	case "video/avi", "video/x-msvideo":
		return ".avi"
	case "audio/mpeg":
		return ".mp3"
	case "audio/wave", "audio/wav", "audio/x-wav":
		return ".wav"
	case "audio/ogg", "application/ogg":
		return ".ogg"
	case "audio/flac", "audio/x-flac":
		return ".flac"
	case "audio/aiff":
		return ".aiff"
	}
	if exts, _ := mime.ExtensionsByType(contentType); len(exts) > 0 {
		return exts[0]
	}
	return ""
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

func cfgInt64(cfg map[string]string, key string, def int64) (int64, error) {
	v := cfg[key]
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive number of bytes", key, v)
	}
	return n, nil
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
