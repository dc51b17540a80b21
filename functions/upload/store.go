package function

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

const (
	storageTimeout = 30 * time.Second // one job insert or one cleanup
	msgStorage     = "storage unavailable, try again"
)

// store streams src into GridFS, inserts the job and publishes the event. On any failure it
// removes whatever it wrote.
func (s *state) store(ctx context.Context, who identity, src *source) (bson.ObjectID, *httpError) {
	fid := newFID()
	// The writer outlives a client that hangs up, so that Abort can still delete its chunks.
	// It holds one pooled 128 KiB chunk (kit_gridfswrite.go), where the driver's upload
	// stream holds 16 MiB.
	streamCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	up, err := NewGridFSWriter(streamCtx, s.videos, "fs", fid)
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
		if aerr := up.Abort(streamCtx); aerr != nil {
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
	src.size = n
	return fid, s.finish(ctx, fid, who, up, src)
}

// finish makes a fully written file visible, inserts its job and publishes its event: the last
// step of a one-shot upload and of a resumable one alike. On a failure it removes the file.
func (s *state) finish(ctx context.Context, fid bson.ObjectID, who identity, up *GridFSWriter, src *source) *httpError {
	if err := up.Close(src.name, fileMetadata(who, src)); err != nil {
		s.cleanup(ctx, fid, false)
		return &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
	}

	now := time.Now().UTC().Truncate(time.Millisecond)
	jctx, jcancel := context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
	defer jcancel()
	job := append(append(bson.D{{Key: "_id", Value: fid}}, ownerFields(who)...),
		bson.E{Key: "filename", Value: src.name},
		bson.E{Key: "content_type", Value: src.contentType},
		bson.E{Key: "size", Value: src.size},
		bson.E{Key: "state", Value: JobUploaded},
		bson.E{Key: "reason", Value: ""},
		bson.E{Key: "mp3_fid", Value: ""},
		bson.E{Key: "attempts", Value: int32(0)},
		bson.E{Key: "created_at", Value: now},
		bson.E{Key: "updated_at", Value: now},
	)
	if tp := traceParent(ctx); tp != "" {
		job = append(job, bson.E{Key: "traceparent", Value: tp}) // a re-drive by the sweep links to this trace
	}
	_, err := s.videos.Collection("jobs").InsertOne(jctx, job)
	if err != nil {
		s.cleanup(ctx, fid, true)
		return &httpError{status: http.StatusServiceUnavailable, msg: msgStorage, cause: err}
	}

	if err := s.publish(ctx, fid, who.Username, src); err != nil {
		s.cleanup(ctx, fid, true)
		return &httpError{status: http.StatusServiceUnavailable, msg: "event broker unavailable, try again", cause: err}
	}
	return nil
}

// fileMetadata is the metadata of a stored video's files document: whose it is and what.
func fileMetadata(who identity, src *source) bson.D {
	return append(ownerFields(who),
		bson.E{Key: "filename", Value: src.name},
		bson.E{Key: "content_type", Value: src.contentType},
	)
}

// ownerFields say whose an upload is, in its job and in its GridFS metadata alike (every
// way of uploading stores them through here). owner_id, the user's id (validate's sub),
// decides who may see the upload: an id is never given to another account, whereas an
// address is, when a user is deleted and an account is made again with it. username, the
// address, is where notify mails.
func ownerFields(who identity) bson.D {
	return bson.D{{Key: "owner_id", Value: who.UserID}, {Key: "username", Value: who.Username}}
}

// newFID is a random id in ObjectID form: the job and file ids of consecutive uploads share
// nothing (bson.NewObjectID's differ by a counter), so one upload's id reveals no other.
func newFID() bson.ObjectID {
	var id bson.ObjectID
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	return id
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

// bodyError maps a failure to read the request body: too large, or the client's fault.
func bodyError(err error) *httpError {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("upload larger than %d bytes", tooBig.Limit), cause: err}
	}
	if errors.Is(err, errIdle) {
		return &httpError{status: http.StatusRequestTimeout, msg: "the upload sent nothing for too long (UPLOAD_IDLE_TIMEOUT)", cause: err}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &httpError{status: http.StatusRequestTimeout, msg: "the upload took longer than the server allows (UPLOAD_TIMEOUT)", cause: err}
	}
	return &httpError{status: http.StatusBadRequest, msg: "could not read the upload (malformed or interrupted body)", cause: err}
}
