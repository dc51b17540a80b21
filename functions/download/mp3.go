package function

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// fileDoc is a GridFS files document of the mp3s bucket.
type fileDoc struct {
	ID         bson.ObjectID `bson:"_id"`
	Length     int64         `bson:"length"`
	UploadDate time.Time     `bson:"uploadDate"`
	Filename   string        `bson:"filename"`
	Metadata   struct {
		OwnerID  string `bson:"owner_id"`
		Username string `bson:"username"`
	} `bson:"metadata"`
}

// msgExpired answers the download of an MP3 the sweep deleted after MP3_RETENTION.
const msgExpired = "this MP3 was deleted after the retention period; upload the video again to convert it anew"

// expiredOwner returns the owner of the job of fid when that job is expired (the sweep
// deleted its MP3 after MP3_RETENTION); ok is false otherwise, or when it cannot tell.
func (s *state) expiredOwner(ctx context.Context, fid bson.ObjectID) (o owner, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var j job
	err := s.videos.Collection("jobs").FindOne(ctx, bson.D{{Key: "_id", Value: fid}, {Key: "state", Value: JobExpired}}).Decode(&j)
	return j.owner(), err == nil
}

// download answers GET /download?fid= with the caller's token: the MP3, if it is theirs.
func (s *state) download(w http.ResponseWriter, r *http.Request, who identity) {
	if fid, err := bson.ObjectIDFromHex(r.URL.Query().Get("fid")); err == nil {
		if owner, ok := s.expiredOwner(r.Context(), fid); ok && who.mayRead(owner) {
			writeError(w, http.StatusGone, msgExpired)
			return
		}
	}
	var doc fileDoc
	fid, ok := s.findOwned(w, r, s.mp3s.Collection("fs.files"), r.URL.Query().Get("fid"), who, &doc)
	if !ok {
		return
	}
	s.serveMP3(w, r, fid, &doc)
}

// msgBadLink is the whole answer to a link that is tampered, expired, or for
// a file that is not its owner's or does not exist: it tells nothing more.
const msgBadLink = "this download link is not valid: it may have expired; ask for a new one from your files"

// downloadSigned answers GET /download?fid=&exp=&sig=: the MP3, if the link
// was signed for its owner and has not expired. Anything else is 403, the
// same for a file that does not exist.
func (s *state) downloadSigned(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fid, err := bson.ObjectIDFromHex(q.Get("fid"))
	if err != nil {
		writeError(w, http.StatusForbidden, msgBadLink)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	var doc fileDoc
	err = s.mp3s.Collection("fs.files").FindOne(ctx, bson.D{{Key: "_id", Value: fid}}).Decode(&doc)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		if owner, ok := s.expiredOwner(r.Context(), fid); ok && s.links.valid(fid.Hex(), owner.email, q.Get("exp"), q.Get("sig"), time.Now()) {
			writeError(w, http.StatusGone, msgExpired)
			return
		}
		writeError(w, http.StatusForbidden, msgBadLink)
	case err != nil:
		s.storageError(w, "find in mp3s.fs.files", err)
	case !s.links.valid(fid.Hex(), doc.owner().email, q.Get("exp"), q.Get("sig"), time.Now()):
		s.log.Info("download link refused", "mp3_fid", fid.Hex()) // never the signature
		writeError(w, http.StatusForbidden, msgBadLink)
	default:
		s.serveMP3(w, r, fid, &doc)
	}
}

// serveMP3 streams the MP3 of doc, honouring a single Range, If-Range and the validators.
func (s *state) serveMP3(w http.ResponseWriter, r *http.Request, fid bson.ObjectID, doc *fileDoc) {
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
		// The kit's reader fetches chunks by _id, from the one that holds start: its cost does
		// not grow with the MP3s stored (a files_id query reads every chunk on FerretDB/SQLite).
		ds, err := OpenGridFSReader(sctx, s.mp3s, "fs", fid, start)
		if errors.Is(err, mongo.ErrFileNotFound) {
			writeError(w, http.StatusNotFound, msgNotFound)
			return
		}
		if err != nil {
			s.storageError(w, "open mp3", err)
			return
		}
		defer ds.Close()
		body = ds
	}

	setValidators()
	if status == http.StatusPartialContent {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	}
	h.Set("Content-Type", mp3MediaType)
	h.Set("X-Content-Type-Options", "nosniff") // the bytes are an upload's: never read them as anything but audio
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
