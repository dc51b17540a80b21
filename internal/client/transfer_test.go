package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// UploadForm sends what upload's multipart parsing expects: one part named
// file, with the file name and the bytes as given.
func TestUploadFormSendsOneFilePart(t *testing.T) {
	body := strings.Repeat("video bytes ", 10000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, `{"error":"not multipart"}`, http.StatusBadRequest)
			return
		}
		p, err := mr.NextPart()
		if err != nil {
			http.Error(w, `{"error":"no part"}`, http.StatusBadRequest)
			return
		}
		got, _ := io.ReadAll(p)
		if p.FormName() != "file" || p.FileName() != "holiday clip.mp4" || string(got) != body || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":"wrong part"}`, http.StatusBadRequest)
			return
		}
		if _, err := mr.NextPart(); err != io.EOF {
			http.Error(w, `{"error":"a second part"}`, http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"video_fid":"6b0b2401fd1faef8e168f998","status_url":"x"}`)
	}))
	defer srv.Close()

	c := &Client{Server: srv.URL, Token: "tok"}
	up, err := c.UploadForm(context.Background(), strings.NewReader(body), "holiday clip.mp4")
	if err != nil || up.VideoFID != "6b0b2401fd1faef8e168f998" {
		t.Fatalf("UploadForm = %+v, %v", up, err)
	}
}

// A refusal comes back as an *APIError with the server's message.
func TestUploadFormRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"upload larger than 10 bytes"}`, http.StatusRequestEntityTooLarge)
	}))
	defer srv.Close()
	_, err := (&Client{Server: srv.URL}).UploadForm(context.Background(), strings.NewReader(strings.Repeat("x", 1<<20)), "big.mp4")
	apiErr, ok := err.(*APIError)
	if !ok || apiErr.Status != http.StatusRequestEntityTooLarge || apiErr.Message != "upload larger than 10 bytes" {
		t.Fatalf("err = %v, want the 413 with its message", err)
	}
}
