package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Resumable uploads speak tus 1.0 (https://tus.io) at /upload/: CreateUpload gives an upload
// URL, UploadOffset asks how much of it the server has, PatchUpload sends bytes from there.
// The request that brings the last byte answers the job in Video-Fid and Status-Url.

const tusVersion = "1.0.0"

// UploadState is what the server has of a resumable upload.
type UploadState struct {
	Offset int64     // bytes stored
	Length int64     // the file's size
	Done   *Uploaded // the job, once the last byte is stored
}

// CreateUpload starts a resumable upload of size bytes named filename and returns its URL.
func (c *Client) CreateUpload(ctx context.Context, size int64, filename, contentType string) (string, error) {
	req, err := c.tusRequest(ctx, http.MethodPost, c.Server+"/upload/", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	req.Header.Set("Upload-Metadata", "filename "+base64.StdEncoding.EncodeToString([]byte(filename))+
		",filetype "+base64.StdEncoding.EncodeToString([]byte(contentType)))
	resp, err := c.send(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	loc, err := req.URL.Parse(resp.Header.Get("Location")) // may be relative to the server
	if err != nil || resp.Header.Get("Location") == "" {
		return "", fmt.Errorf("the server created an upload without a usable Location: %q", resp.Header.Get("Location"))
	}
	return loc.String(), nil
}

// UploadOffset asks how much of the upload at uploadURL the server has (HEAD). An upload
// the server no longer knows (expired, or another user's) is an *APIError with status 404.
func (c *Client) UploadOffset(ctx context.Context, uploadURL string) (UploadState, error) {
	req, err := c.tusRequest(ctx, http.MethodHead, uploadURL, nil)
	if err != nil {
		return UploadState{}, err
	}
	resp, err := c.send(req)
	if err != nil {
		return UploadState{}, err
	}
	resp.Body.Close()
	return uploadState(resp)
}

// PatchUpload streams n bytes of body to the upload at uploadURL from offset, the server's
// (UploadOffset), and returns what the server then has. When the connection drops midway the
// server keeps what reached it: ask UploadOffset, and send from there.
func (c *Client) PatchUpload(ctx context.Context, uploadURL string, offset int64, body io.Reader, n int64) (UploadState, error) {
	req, err := c.tusRequest(ctx, http.MethodPatch, uploadURL, io.NopCloser(body))
	if err != nil {
		return UploadState{}, err
	}
	req.ContentLength = n
	if n == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	resp, err := c.send(req)
	if err != nil {
		return UploadState{}, err
	}
	resp.Body.Close()
	return uploadState(resp)
}

// DeleteUpload ends an unfinished upload; the server removes what it stored.
func (c *Client) DeleteUpload(ctx context.Context, uploadURL string) error {
	req, err := c.tusRequest(ctx, http.MethodDelete, uploadURL, nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// RetryUpload tells whether an upload request that failed with err is worth resuming:
// the connection dropped (the server keeps what arrived), the server was busy or briefly
// unavailable, another request still held the upload (423), or the server has another offset
// (409). It says how long to wait.
func RetryUpload(err error) (time.Duration, bool) {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return time.Second, errors.Is(err, ErrUnreachable)
	}
	switch apiErr.Status {
	case http.StatusConflict: // another offset than ours: ask the server's
		return 0, true
	case http.StatusLocked, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		secs, perr := strconv.Atoi(apiErr.Header.Get("Retry-After"))
		if perr != nil || secs <= 0 {
			secs = 1
		}
		return min(time.Duration(secs)*time.Second, time.Minute), true
	}
	return 0, false
}

func (c *Client) tusRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	if _, err := url.Parse(u); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Tus-Resumable", tusVersion)
	return req, nil
}

func uploadState(resp *http.Response) (UploadState, error) {
	var st UploadState
	var err error
	if st.Offset, err = strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64); err != nil {
		return st, fmt.Errorf("the server answered no Upload-Offset (HTTP %d)", resp.StatusCode)
	}
	st.Length, _ = strconv.ParseInt(resp.Header.Get("Upload-Length"), 10, 64)
	if fid := resp.Header.Get("Video-Fid"); fid != "" {
		st.Done = &Uploaded{VideoFID: fid, StatusURL: resp.Header.Get("Status-Url")}
	}
	return st, nil
}
