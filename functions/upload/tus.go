package function

// Resumable uploads: the tus 1.0 protocol (https://tus.io/protocols/resumable-upload) at
// /upload/, with the creation, creation-with-upload, termination, expiration and checksum
// extensions.
//
// Our own handler rather than tusd's: an upload belongs to its creator (another user's HEAD
// or PATCH is 404, so tusd's handler would need a wrapper that parses its URLs and loads its
// state again), the first bytes must be sniffed before anything is stored (tusd creates the
// upload before creation-with-upload's bytes arrive), and the state lives in MongoDB next to
// the chunks, under the same conditional writes the rest of upload uses. What is left of
// the protocol is the small part below.
//
// State: one document per upload in videos.uploads (_id the file id, its owner, length,
// offset, expiry); the bytes are the GridFS chunks of that id, written as they arrive with
// the partial last chunk flushed at the end of each PATCH. Any replica can take the next
// PATCH. A PATCH holds a lock (videos.upload_locks, inserted by _id, which is atomic on
// FerretDB too) so that two requests never write one file at once.

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

const (
	tusPath      = "/upload/"
	tusVersion   = "1.0.0"
	tusOctets    = "application/offset+octet-stream"
	tusChecksums = "sha1,md5,sha256"

	// The answer that finishes an upload (and a HEAD after it) carries the job in these:
	// same origin behind web, so the browser's client reads them without CORS exposure.
	headerVideoFID  = "Video-Fid"
	headerStatusURL = "Status-Url"

	statusChecksumMismatch = 460 // tus checksum extension
)

// tusUpload is an upload's document in videos.uploads.
type tusUpload struct {
	ID          bson.ObjectID `bson:"_id"`
	OwnerID     string        `bson:"owner_id"` // validate's sub: only its user sees the upload
	Username    string        `bson:"username"`
	Filename    string        `bson:"filename"`     // as declared; cleaned when sniffed
	Declared    string        `bson:"declared"`     // filetype from Upload-Metadata
	ContentType string        `bson:"content_type"` // set by sniffing the first bytes
	Length      int64         `bson:"length"`
	Offset      int64         `bson:"offset"`
	Done        bool          `bson:"done"`    // the job exists: HEAD answers it, the chunks are the video's
	Writing     bool          `bson:"writing"` // a request may have stored bytes past Offset: trim before going on
	CreatedAt   time.Time     `bson:"created_at"`
	ExpiresAt   time.Time     `bson:"expires_at"`
}

func (s *state) uploads() *mongo.Collection { return s.videos.Collection("uploads") }

// serveTus answers every request under /upload/.
func (s *state) serveTus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Tus-Resumable", tusVersion)
	if r.Method == http.MethodOptions {
		w.Header().Set("Tus-Version", tusVersion)
		w.Header().Set("Tus-Extension", "creation,creation-with-upload,termination,expiration,checksum")
		w.Header().Set("Tus-Checksum-Algorithm", tusChecksums)
		w.Header().Set("Tus-Max-Size", strconv.FormatInt(s.maxBytes, 10))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Header.Get("Tus-Resumable") != tusVersion {
		w.Header().Set("Tus-Version", tusVersion)
		refuse(w, http.StatusPreconditionFailed, "send Tus-Resumable: "+tusVersion)
		return
	}
	who, aerr := s.auth.identify(r.Context(), r.Header.Get("Authorization"))
	if aerr != nil {
		w.Header().Set("Connection", "close")
		aerr.write(w)
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, tusPath)
	if rest == "" {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST, OPTIONS")
			refuse(w, http.StatusMethodNotAllowed, "create an upload with POST")
			return
		}
		s.tusCreate(w, r, who)
		return
	}
	id, err := bson.ObjectIDFromHex(rest)
	if err != nil {
		refuse(w, http.StatusNotFound, "no such upload")
		return
	}
	switch r.Method {
	case http.MethodHead:
		s.tusHead(w, r, who, id)
	case http.MethodPatch:
		s.tusPatch(w, r, who, id)
	case http.MethodDelete:
		s.tusDelete(w, r, who, id)
	default:
		w.Header().Set("Allow", "HEAD, PATCH, DELETE, OPTIONS")
		refuse(w, http.StatusMethodNotAllowed, "use HEAD, PATCH or DELETE")
	}
}

// tusCreate answers POST /upload/: Upload-Length and Upload-Metadata (filename, filetype),
// with the first bytes in the body when the client sends them (creation-with-upload).
func (s *state) tusCreate(w http.ResponseWriter, r *http.Request, who identity) {
	length, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	switch {
	case r.Header.Get("Upload-Defer-Length") != "":
		refuse(w, http.StatusBadRequest, "send Upload-Length: deferred lengths are not supported")
		return
	case err != nil || length < 0:
		refuse(w, http.StatusBadRequest, "send Upload-Length, the size of the file in bytes")
		return
	case length == 0:
		refuse(w, http.StatusBadRequest, "the file is empty")
		return
	case length > s.maxBytes:
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("upload larger than %d bytes", s.maxBytes))
		return
	}
	meta := parseTusMetadata(r.Header.Get("Upload-Metadata"))
	u := &tusUpload{
		ID:        newFID(),
		OwnerID:   who.UserID,
		Username:  who.Username,
		Filename:  firstOf(meta["filename"], meta["name"]),
		Declared:  firstOf(meta["filetype"], meta["type"]),
		Length:    length,
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
	}
	if notMedia(u.Declared) {
		refuse(w, http.StatusUnsupportedMediaType, "content type "+mediaTypeOf(u.Declared)+" is not a video or audio type")
		return
	}
	withBytes := r.ContentLength > 0 || (r.ContentLength < 0 && r.Header.Get("Content-Type") == tusOctets)
	if withBytes && r.Header.Get("Content-Type") != tusOctets {
		refuse(w, http.StatusUnsupportedMediaType, "send the first bytes as "+tusOctets)
		return
	}

	var rcv *receiver
	if withBytes {
		// Sniff before anything is stored: what is not media leaves nothing behind.
		var herr *httpError
		if rcv, herr = s.startReceiving(w, r, who, u, 0, false); herr != nil {
			herr.write(w)
			return
		}
		defer rcv.release()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storageTimeout)
	defer cancel()
	u.ExpiresAt = time.Now().Add(s.expiry).UTC()
	if _, err := s.uploads().InsertOne(ctx, u); err != nil {
		writeStorageError(w, s, "upload create failed", err)
		return
	}
	location := s.publicURL + tusPath + u.ID.Hex()
	w.Header().Set("Location", location)
	if rcv == nil {
		s.log.Info("resumable upload created", "user", who.Username, "video_fid", u.ID.Hex(), "length", length)
		w.Header().Set("Upload-Expires", u.ExpiresAt.Format(http.TimeFormat))
		w.WriteHeader(http.StatusCreated)
		return
	}
	s.receive(w, r, rcv, http.StatusCreated)
}

// tusHead answers HEAD /upload/<id>: how much is stored.
func (s *state) tusHead(w http.ResponseWriter, r *http.Request, who identity, id bson.ObjectID) {
	u, herr := s.findUpload(r.Context(), who, id)
	if herr != nil {
		herr.write(w)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Upload-Offset", strconv.FormatInt(u.Offset, 10))
	w.Header().Set("Upload-Length", strconv.FormatInt(u.Length, 10))
	w.Header().Set("Upload-Expires", u.ExpiresAt.Format(http.TimeFormat))
	if u.Done {
		s.setJobHeaders(w, u.ID)
	}
	w.WriteHeader(http.StatusOK)
}

// tusPatch answers PATCH /upload/<id>: the bytes from Upload-Offset on.
func (s *state) tusPatch(w http.ResponseWriter, r *http.Request, who identity, id bson.ObjectID) {
	if mediaTypeOf(r.Header.Get("Content-Type")) != tusOctets {
		refuse(w, http.StatusUnsupportedMediaType, "send the bytes as "+tusOctets)
		return
	}
	offset, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || offset < 0 {
		refuse(w, http.StatusBadRequest, "send Upload-Offset, where these bytes start")
		return
	}
	u, herr := s.findUpload(r.Context(), who, id)
	if herr != nil {
		herr.write(w)
		return
	}
	rcv, herr := s.startReceiving(w, r, who, u, offset, true)
	if herr != nil {
		herr.write(w)
		return
	}
	defer rcv.release()
	s.receive(w, r, rcv, http.StatusNoContent)
}

// tusDelete answers DELETE /upload/<id> (termination): an unfinished upload's chunks go; a
// finished one's are the job's video, and only the upload's record goes.
func (s *state) tusDelete(w http.ResponseWriter, r *http.Request, who identity, id bson.ObjectID) {
	u, herr := s.findUpload(r.Context(), who, id)
	if herr != nil {
		herr.write(w)
		return
	}
	unlock, herr := s.lockUpload(r.Context(), id)
	if herr != nil {
		herr.write(w)
		return
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storageTimeout)
	defer cancel()
	if _, err := s.uploads().DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		writeStorageError(w, s, "upload delete failed", err)
		return
	}
	if !u.Done {
		s.cleanup(ctx, id, false)
	}
	s.log.Info("resumable upload terminated", "user", who.Username, "video_fid", id.Hex(), "offset", u.Offset)
	w.WriteHeader(http.StatusNoContent)
}

// receiver is one request's bytes on their way into an upload, from its offset on.
type receiver struct {
	u       *tusUpload
	offset  int64
	head    []byte // the first bytes, already read (sniffed) from the body
	body    *bodyReader
	sum     hash.Hash // Upload-Checksum's algorithm, nil without one
	want    []byte    // Upload-Checksum's digest
	release func()    // the slot and the lock; idempotent
}

// startReceiving checks a request that brings bytes at offset: the upload's offset, its
// length, the checksum header; it takes a slot and, for a stored upload (a PATCH, not a
// creation), its lock; it extends the deadlines and sniffs the first bytes of the file. On an
// error nothing is held, and an upload whose first bytes are not media is removed.
func (s *state) startReceiving(w http.ResponseWriter, r *http.Request, who identity, u *tusUpload, offset int64, stored bool) (rcv *receiver, herr *httpError) {
	sum, want, herr := parseChecksum(r.Header.Get("Upload-Checksum"))
	if herr != nil {
		return nil, herr
	}
	if u.Done || offset != u.Offset {
		return nil, &httpError{status: http.StatusConflict, msg: fmt.Sprintf("the upload is at offset %d", u.Offset)}
	}
	if r.ContentLength > u.Length-offset {
		return nil, &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("more bytes than the %d declared in Upload-Length", u.Length)}
	}
	release, ok := s.slots.take(r.Context(), who.UserID)
	if !ok {
		return nil, errNoSlot
	}
	held := []func(){release}
	defer func() {
		if herr != nil {
			for _, f := range held {
				f()
			}
		}
	}()
	if stored {
		unlock, herr := s.lockUpload(r.Context(), u.ID)
		if herr != nil {
			return nil, herr
		}
		held = append(held, unlock)
		// The lock's holder before us may have moved the upload on.
		if fresh, herr := s.findUpload(r.Context(), who, u.ID); herr != nil {
			return nil, herr
		} else if *u = *fresh; u.Done || offset != u.Offset {
			return nil, &httpError{status: http.StatusConflict, msg: fmt.Sprintf("the upload is at offset %d", u.Offset)}
		}
	}

	body := s.timedBody(w, r, u.Length-offset) // as POST /upload
	rcv = &receiver{u: u, offset: offset, body: &bodyReader{r: body}, sum: sum, want: want}
	if u.ContentType == "" { // the first bytes of the file: refuse what is not media now
		head := make([]byte, min(int64(sniffLen), u.Length))
		n, _ := io.ReadFull(rcv.body, head)
		if rcv.body.err != nil {
			return nil, bodyError(rcv.body.err)
		}
		if n == 0 {
			return nil, &httpError{status: http.StatusBadRequest, msg: "send the first bytes of the file"}
		}
		rcv.head = head[:n]
		name, contentType, herr := classify(u.Filename, u.Declared, rcv.head)
		if herr != nil {
			if stored {
				s.dropUpload(r.Context(), u.ID)
			}
			return nil, herr
		}
		u.Filename, u.ContentType = name, contentType
	}
	// Released before the answer goes out (and again, harmlessly, when the handler returns), so
	// that the client's next request never meets this one's lock.
	var once sync.Once
	rcv.release = func() {
		once.Do(func() {
			for _, f := range held {
				f()
			}
		})
	}
	return rcv, nil
}

// receive stores the request's bytes, records how far the upload got (also when the client
// hung up midway: the next PATCH goes on from there), and finishes the upload at its last
// byte. It answers status, or the error.
func (s *state) receive(w http.ResponseWriter, r *http.Request, rcv *receiver, status int) {
	u := rcv.u
	// The writer outlives a client that hangs up, so that what arrived is kept.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.timeout)
	defer cancel()
	// The upload must not expire while this request runs.
	if _, err := s.uploads().UpdateOne(ctx, bson.D{{Key: "_id", Value: u.ID}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "writing", Value: true},
		{Key: "expires_at", Value: time.Now().Add(s.timeout + s.expiry).UTC()},
		{Key: "filename", Value: u.Filename},
		{Key: "content_type", Value: u.ContentType},
	}}}); err != nil {
		writeStorageError(w, s, "upload update failed", err)
		return
	}
	up, err := s.openWriter(ctx, u.ID, rcv.offset, u.Writing)
	if err != nil {
		writeStorageError(w, s, "upload resume failed", err)
		return
	}
	var src io.Reader = io.MultiReader(bytes.NewReader(rcv.head), rcv.body)
	if rcv.sum != nil {
		src = io.TeeReader(src, rcv.sum)
	}
	_, copyErr := io.Copy(up, src)
	length := up.Length()
	if copyErr == nil && rcv.sum != nil && !bytes.Equal(rcv.sum.Sum(nil), rcv.want) {
		length = rcv.offset // the offset stays: the next PATCH overwrites these bytes
		copyErr = errChecksum
	}
	if length == u.Length && copyErr == nil {
		s.finishTus(w, r, up, u, status, rcv.release)
		return
	}
	var flushErr error
	if length > rcv.offset {
		flushErr = up.Flush()
	}
	up.release()
	if flushErr == nil {
		// After a checksum mismatch the bytes past the offset stay stored: the next request trims.
		flushErr = s.recordOffset(ctx, u.ID, length, errors.Is(copyErr, errChecksum))
	}
	rcv.release()
	switch {
	case errors.Is(copyErr, errChecksum):
		writeError(w, statusChecksumMismatch, "checksum mismatch: send these bytes again")
	case flushErr != nil || (copyErr != nil && rcv.body.err == nil):
		writeStorageError(w, s, "upload write failed", errors.Join(copyErr, flushErr))
	case copyErr != nil:
		s.log.Info("resumable upload interrupted", "video_fid", u.ID.Hex(), "offset", length, "err", rcv.body.err)
		bodyError(rcv.body.err).write(w)
	default:
		w.Header().Set("Upload-Offset", strconv.FormatInt(length, 10))
		w.Header().Set("Upload-Expires", time.Now().Add(s.expiry).UTC().Format(http.TimeFormat))
		w.WriteHeader(status)
	}
}

// finishTus finishes an upload whose last byte arrived as a one-shot upload finishes (the
// file, the job, the event) and answers the job in Video-Fid and Status-Url.
func (s *state) finishTus(w http.ResponseWriter, r *http.Request, up *GridFSWriter, u *tusUpload, status int, release func()) {
	src := &source{name: u.Filename, contentType: u.ContentType, size: u.Length}
	// Every byte is stored: the job and its event no longer depend on the client staying to
	// hear the answer (it learns the job from HEAD when it missed it).
	ctx := context.WithoutCancel(r.Context())
	if herr := s.finish(ctx, u.ID, identity{UserID: u.OwnerID, Username: u.Username}, up, src); herr != nil {
		// finish removed the file and the job: the upload has to start over.
		s.dropUpload(r.Context(), u.ID)
		release()
		s.log.Error("resumable upload failed", "user", u.Username, "video_fid", u.ID.Hex(), "status", herr.status, "err", herr.cause)
		herr.write(w)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	expires := time.Now().Add(s.expiry).UTC()
	// The record stays until it expires, so that a client that missed this answer learns
	// from HEAD that the upload is complete, and which job it made.
	if _, err := s.uploads().UpdateOne(ctx, bson.D{{Key: "_id", Value: u.ID}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "offset", Value: u.Length}, {Key: "done", Value: true}, {Key: "writing", Value: false}, {Key: "expires_at", Value: expires},
	}}}); err != nil {
		s.log.Warn("resumable upload: cannot mark done (the job exists)", "video_fid", u.ID.Hex(), "err", err)
	}
	release()
	s.log.Info("upload accepted", "user", u.Username, "video_fid", u.ID.Hex(), "filename", u.Filename,
		"content_type", u.ContentType, "size", u.Length, "resumable", true)
	s.setJobHeaders(w, u.ID)
	w.Header().Set("Upload-Offset", strconv.FormatInt(u.Length, 10))
	w.Header().Set("Upload-Expires", expires.Format(http.TimeFormat))
	w.WriteHeader(status)
}

func (s *state) setJobHeaders(w http.ResponseWriter, fid bson.ObjectID) {
	w.Header().Set(headerVideoFID, fid.Hex())
	w.Header().Set(headerStatusURL, s.publicURL+"/jobs/"+fid.Hex())
}

// findUpload loads the caller's upload id; another user's is as absent as a missing one.
func (s *state) findUpload(ctx context.Context, who identity, id bson.ObjectID) (*tusUpload, *httpError) {
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	var u tusUpload
	err := s.uploads().FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&u)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && u.OwnerID != who.UserID) {
		return nil, &httpError{status: http.StatusNotFound, msg: "no such upload"}
	}
	if err != nil {
		return nil, &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
	}
	return &u, nil
}

// recordOffset notes how much of the upload is stored (and whether more may be, past it), and
// starts its expiry again.
func (s *state) recordOffset(ctx context.Context, id bson.ObjectID, offset int64, more bool) error {
	_, err := s.uploads().UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "offset", Value: offset}, {Key: "writing", Value: more}, {Key: "expires_at", Value: time.Now().Add(s.expiry).UTC()},
	}}})
	return err
}

// openWriter continues the upload's file at offset, the recorded one. A request that failed
// between storing bytes and recording them (writing still set) left more: that is trimmed away
// first. Only then: on FerretDB's SQLite backend the trim scans every chunk of the bucket.
func (s *state) openWriter(ctx context.Context, id bson.ObjectID, offset int64, writing bool) (*GridFSWriter, error) {
	if writing {
		if err := TrimGridFSChunks(ctx, s.videos, "fs", id, offset); err != nil {
			return nil, err
		}
	}
	if offset == 0 {
		return NewGridFSWriter(ctx, s.videos, "fs", id)
	}
	return ResumeGridFSWriter(ctx, s.videos, "fs", id, offset)
}

// dropUpload removes an unfinished upload: its record and its chunks.
func (s *state) dropUpload(ctx context.Context, id bson.ObjectID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
	defer cancel()
	if _, err := s.uploads().DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		s.log.Error("cannot remove upload record", "video_fid", id.Hex(), "err", err)
	}
	s.cleanup(ctx, id, false)
}

// The lock of an upload's writer: a document inserted by _id (atomic on FerretDB too), its
// lease renewed while the request runs, so that a process that dies holding it blocks the
// upload for lockLease at most.
const lockLease = time.Minute

// lockUpload takes the upload's lock, or answers 423 when another request holds it.
func (s *state) lockUpload(ctx context.Context, id bson.ObjectID) (unlock func(), herr *httpError) {
	locks := s.videos.Collection("upload_locks")
	token := newFID()
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	for attempt := 0; attempt < 2; attempt++ {
		_, err := locks.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "token", Value: token},
			{Key: "until", Value: time.Now().Add(lockLease).UTC()}})
		if err == nil {
			return s.holdLock(locks, id, token), nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return nil, &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
		}
		// Held: by a live request, or by a process that died (its lease ran out).
		res, err := locks.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "until", Value: bson.D{{Key: "$lt", Value: time.Now().UTC()}}}})
		if err != nil {
			return nil, &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
		}
		if res.DeletedCount == 0 {
			break
		}
	}
	return nil, &httpError{status: http.StatusLocked, msg: "another request is sending to this upload, try again", retryAfter: time.Second}
}

// holdLock renews the lock's lease until the returned unlock removes it.
func (s *state) holdLock(locks *mongo.Collection, id, token bson.ObjectID) (unlock func()) {
	mine := bson.D{{Key: "_id", Value: id}, {Key: "token", Value: token}}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(lockLease / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
				_, err := locks.UpdateOne(ctx, mine, bson.D{{Key: "$set", Value: bson.D{{Key: "until", Value: time.Now().Add(lockLease).UTC()}}}})
				cancel()
				if err != nil {
					s.log.Warn("cannot renew upload lock", "video_fid", id.Hex(), "err", err)
				}
			}
		}
	}()
	return func() {
		close(stop)
		<-stopped
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		defer cancel()
		if _, err := locks.DeleteOne(ctx, mine); err != nil {
			s.log.Warn("cannot release upload lock: it ends with its lease", "video_fid", id.Hex(), "err", err)
		}
	}
}

func writeStorageError(w http.ResponseWriter, s *state, what string, err error) {
	s.log.Error(what, "err", err)
	writeError(w, http.StatusServiceUnavailable, msgStorage)
}

// parseTusMetadata reads Upload-Metadata: comma-separated "key base64(value)" pairs.
func parseTusMetadata(h string) map[string]string {
	meta := map[string]string{}
	for _, pair := range strings.Split(h, ",") {
		key, value, _ := strings.Cut(strings.TrimSpace(pair), " ")
		if key == "" {
			continue
		}
		if v, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value)); err == nil {
			meta[key] = string(v)
		}
	}
	return meta
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

var errChecksum = errors.New("checksum mismatch")

// parseChecksum reads Upload-Checksum ("sha1 <base64 digest>"): the hash to compute over
// this request's bytes and the digest it must give. None: nil.
func parseChecksum(h string) (hash.Hash, []byte, *httpError) {
	if h == "" {
		return nil, nil, nil
	}
	algo, digest, _ := strings.Cut(h, " ")
	want, err := base64.StdEncoding.DecodeString(strings.TrimSpace(digest))
	var sum hash.Hash
	switch algo {
	case "sha1":
		sum = sha1.New()
	case "md5":
		sum = md5.New()
	case "sha256":
		sum = sha256.New()
	default:
		return nil, nil, &httpError{status: http.StatusBadRequest, msg: "Upload-Checksum: use one of " + tusChecksums}
	}
	if err != nil || len(want) != sum.Size() {
		return nil, nil, &httpError{status: http.StatusBadRequest, msg: "Upload-Checksum: not a base64 " + algo + " digest"}
	}
	return sum, want, nil
}
