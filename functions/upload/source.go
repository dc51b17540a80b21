package function

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	sniffLen     = 512 // what http.DetectContentType looks at
	maxNameBytes = 255
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
	name, contentType, herr := classify(name, declared, head)
	if herr != nil {
		return nil, herr
	}
	return &source{
		name:        name,
		contentType: contentType,
		head:        head,
		body:        br,
		finish:      finish,
	}, nil
}

// classify refuses what is plainly not media by its first bytes (head) and its declared type,
// and picks the stored name and content type of the rest: the one-shot upload and the
// resumable one decide alike.
func classify(name, declared string, head []byte) (cleanedName, contentType string, herr *httpError) {
	sniffed := containerType(head)
	declaredType, _, _ := mime.ParseMediaType(declared)
	if sniffed == "" || notMedia(declaredType) {
		looks := mediaTypeOf(http.DetectContentType(head))
		return "", "", &httpError{status: http.StatusUnsupportedMediaType, msg: "not a video or audio file (looks like " + looks + ")"}
	}
	name = cleanName(name)
	contentType = "application/octet-stream"
	for _, t := range []string{declaredType, mime.TypeByExtension(extOf(name)), sniffed} {
		if t = mediaTypeOf(t); isMedia(t) {
			contentType = t
			break
		}
	}
	if name == "" {
		name = "upload" + extFor(contentType)
	}
	return name, contentType, nil
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
