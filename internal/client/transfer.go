package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Uploaded is what POST /upload answers.
type Uploaded struct {
	VideoFID  string `json:"video_fid"`
	StatusURL string `json:"status_url"`
}

// Job is a conversion job as GET /jobs and GET /jobs/{video_fid} show it.
type Job struct {
	VideoFID        string    `json:"video_fid"`
	Filename        string    `json:"filename"`
	ContentType     string    `json:"content_type"`
	Size            int64     `json:"size"`
	State           string    `json:"state"` // uploaded, converting, done, failed
	Reason          string    `json:"reason"`
	MP3FID          string    `json:"mp3_fid"`
	DurationSeconds float64   `json:"duration_seconds"`
	Attempts        int32     `json:"attempts"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	Progress        *int      `json:"progress,omitempty"` // 0-100 while converting
	DownloadURL     string    `json:"download_url,omitempty"`
}

// Finished tells whether the job will not change any more.
func (j Job) Finished() bool { return j.State == "done" || j.State == "failed" }

// Upload streams size bytes from body as a raw POST /upload named filename.
// It never buffers the body, and asks the server first (Expect: 100-continue)
// so that a refusal (401, 413) comes before the bytes are sent.
func (c *Client) Upload(ctx context.Context, body io.Reader, size int64, filename, contentType string) (Uploaded, error) {
	u := c.Server + "/upload?filename=" + url.QueryEscape(filename)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, io.NopCloser(body))
	if err != nil {
		return Uploaded{}, err
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Expect", "100-continue")
	var out Uploaded
	return out, c.do(req, &out)
}

// UploadForm streams body as the one file part of a multipart POST /upload
// named filename, as `curl -F file=@...` and the original API's clients do.
func (c *Client) UploadForm(ctx context.Context, body io.Reader, filename string) (Uploaded, error) {
	pr, pw := io.Pipe()
	defer pr.Close() // ends the writer below if the request stops reading
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", filename)
		if err == nil {
			_, err = io.Copy(part, body)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server+"/upload", pr)
	if err != nil {
		return Uploaded{}, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var out Uploaded
	return out, c.do(req, &out)
}

// Job returns one job of the caller's.
func (c *Client) Job(ctx context.Context, videoFID string) (Job, error) {
	var j Job
	return j, c.call(ctx, http.MethodGet, "/jobs/"+url.PathEscape(videoFID), nil, &j)
}

// Jobs lists the caller's jobs, newest first: at most limit (0: the server's
// default), older than the job before (empty: from the newest). next is the
// before of the following page, empty on the last one.
func (c *Client) Jobs(ctx context.Context, limit int, before string) (jobs []Job, next string, err error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if before != "" {
		q.Set("before", before)
	}
	path := "/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Jobs []Job  `json:"jobs"`
		Next string `json:"next"`
	}
	err = c.call(ctx, http.MethodGet, path, nil, &out)
	return out.Jobs, out.Next, err
}

// Download is an MP3 being received: the whole file, or its tail from Offset.
type Download struct {
	Body         io.ReadCloser
	Offset       int64  // where Body starts in the file (0 unless the server honoured the range)
	Size         int64  // the whole file's size, -1 if unknown
	ETag         string // the validator to resume with (If-Range)
	LastModified string
	ContentType  string
	Filename     string // from Content-Disposition, "" if none
}

// OpenDownload asks GET /download?fid= for the MP3 from offset on. When
// offset > 0, ifRange (an ETag or a Last-Modified date) makes the server send
// the whole file instead if it changed since: check Offset. The caller closes
// Body.
func (c *Client) OpenDownload(ctx context.Context, fid string, offset int64, ifRange string) (*Download, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+"/download?fid="+url.QueryEscape(fid), nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	d := &Download{
		Body:         resp.Body,
		Size:         resp.ContentLength,
		ETag:         resp.Header.Get("ETag"),
		LastModified: resp.Header.Get("Last-Modified"),
		ContentType:  resp.Header.Get("Content-Type"),
	}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		d.Filename = params["filename"]
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusPartialContent:
		start, size, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			resp.Body.Close()
			return nil, err
		}
		d.Offset, d.Size = start, size
	default:
		resp.Body.Close()
		return nil, &APIError{Status: resp.StatusCode, Message: "unexpected answer " + resp.Status, Header: resp.Header}
	}
	return d, nil
}

// parseContentRange reads "bytes first-last/size".
func parseContentRange(v string) (start, size int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %q", v)
	spec, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, bad
	}
	rng, total, ok := strings.Cut(spec, "/")
	first, _, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, bad
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil {
		return 0, 0, bad
	}
	size = -1
	if total != "*" {
		if size, err = strconv.ParseInt(total, 10, 64); err != nil {
			return 0, 0, bad
		}
	}
	return start, size, nil
}

// IsTransient tells whether trying again later may succeed: the server was
// unreachable, or answered 502, 503 or 504.
func IsTransient(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	return errors.Is(err, ErrUnreachable)
}

// send adds the token and sends; error statuses (>= 400) become *APIError.
// On success the caller owns resp.Body.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.Token != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, c.Server, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}
