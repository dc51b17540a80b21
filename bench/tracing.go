package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"time"

	upload "mp3converter/functions/upload"
	validate "mp3converter/functions/validate"
)

// What the tracing group runs per case and run: validate's requests are cheap, so many; the
// uploads are small ones (1 MiB), so that the spans' share shows.
const (
	tracedValidateRequests = 2000
	tracedUploads          = 20
	tracedUploadBytes      = 1 << 20
)

// tracing measures what tracing costs: validate and upload with every span exported over
// OTLP/HTTP (to a receiver in this process) against the same functions with no endpoint, in
// the same run, alternating.
func (b *bench) tracing(ctx context.Context) (*section, error) {
	sec := &section{title: "7. Tracing: exporting every span vs off"}
	s, err := b.startStack(ctx, "tracing", false)
	if err != nil {
		return nil, err
	}
	defer s.close()

	var exported atomic.Int64 // bytes of OTLP the receiver took
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		exported.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer receiver.Close()
	traced := func(cfg map[string]string) map[string]string {
		on := maps.Clone(cfg)
		on["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.URL
		on["OTEL_TRACES_SAMPLER"] = "always_on"
		return on
	}

	validateCfg := map[string]string{"JWT_PUBLIC_KEY_FILE": filepath.Join(s.DataDir, "jwt-public.pem")}
	uploadCfg := map[string]string{
		"MONGODB_URI":  s.MongoURI,
		"VALIDATE_URL": s.Functions["validate"] + "/validate",
		"K_SINK":       s.BrokerURL,
	}
	var urls [2][2]string // [validate, upload][off, on]
	for i, f := range []struct {
		name string
		new  func() any
		cfg  map[string]string
	}{
		{"validate", func() any { return validate.New() }, validateCfg},
		{"upload", func() any { return upload.New() }, uploadCfg},
	} {
		for j, cfg := range []map[string]string{f.cfg, traced(f.cfg)} {
			url, stop, err := serveFunction(ctx, f.new(), f.name, cfg)
			if err != nil {
				return nil, err
			}
			defer stop()
			urls[i][j] = url
		}
	}
	validateOnce := func(url string) func() error {
		return func() error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/validate", nil)
			req.Header.Set("Authorization", "Bearer "+s.AdminToken)
			return expect200(req)
		}
	}
	uploads := func(url string) (time.Duration, error) {
		t := time.Now()
		for range tracedUploads {
			if _, _, err := uploadBody(ctx, url, s.AdminToken, "generated.mp4", newGenerated(tracedUploadBytes, ftyp), tracedUploadBytes); err != nil {
				return 0, err
			}
		}
		return time.Since(t), nil
	}

	// Warm up both of each, unmeasured.
	for _, url := range urls[0] {
		if _, err := load(validateClients, 200, validateOnce(url)); err != nil {
			return nil, err
		}
	}
	for _, url := range urls[1] {
		if _, _, err := uploadBody(ctx, url, s.AdminToken, "warm.mp4", newGenerated(tracedUploadBytes, ftyp), tracedUploadBytes); err != nil {
			return nil, err
		}
	}
	var valOff, valOn, upOff, upOn samples
	for i := range b.opts.runs {
		for j, got := range []*samples{&valOff, &valOn} {
			d, err := load(validateClients, tracedValidateRequests, validateOnce(urls[0][j]))
			if err != nil {
				return nil, err
			}
			*got = append(*got, d)
		}
		for j, got := range []*samples{&upOff, &upOn} {
			d, err := uploads(urls[1][j])
			if err != nil {
				return nil, err
			}
			*got = append(*got, d)
		}
		b.progress("tracing run %d: validate %.0f/s off, %.0f/s exporting; uploads %s off, %s exporting", i+1,
			rate(tracedValidateRequests, valOff[i]), rate(tracedValidateRequests, valOn[i]), round(upOff[i]), round(upOn[i]))
	}
	if exported.Load() == 0 {
		return nil, fmt.Errorf("the traced functions exported nothing")
	}
	sec.add("validate (signature and claims), every request traced and exported", rateOf(tracedValidateRequests, valOn),
		"the same, no endpoint: "+rateOf(tracedValidateRequests, valOff), ratio(valOn.median(), valOff.median()))
	sec.add(fmt.Sprintf("upload: %d uploads of 1 MiB in a row, traced and exported (token check, GridFS write)", tracedUploads), upOn.String(),
		"the same, no endpoint: "+upOff.String(), ratio(upOn.median(), upOff.median()))
	sec.note("Two instances of each function hosted in this process by internal/local/funchost, one with OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP/HTTP receiver in this process (it reads and drops the spans: %s of OTLP in all) and OTEL_TRACES_SAMPLER=always_on, one without. validate: %d keep-alive clients share %d `POST /validate` (only JWT_PUBLIC_KEY_FILE, as in section 4). upload: the stack's MongoDB, validate (cached token) and Broker (no convert Trigger). %d runs, alternating off and on; the ratio is exporting ÷ off of the medians (time: above ×1 is slower; the goal is at most ×1.05).", fileSize(exported.Load()), validateClients, tracedValidateRequests, b.opts.runs)
	return sec, nil
}

// fileSize is n bytes in KiB or MiB.
func fileSize(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
}
