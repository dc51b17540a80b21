package function

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
)

// proxy passes requests on to one function. Bodies stream both ways: nothing is buffered,
// and headers (Range, ETag, If-None-Match, Content-Disposition, ...) pass as they are.
type proxy struct {
	function string
	timeout  time.Duration // 0: func-go's server timeouts stand
	log      *slog.Logger
	rp       *httputil.ReverseProxy
}

// upstreamTransport carries every proxied request: straight to the functions (never through an
// HTTP_PROXY of the environment), with enough idle connections kept for busy moments, and
// buffers big enough that an upload passes in a few large writes rather than many 4 KiB ones.
var upstreamTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConnsPerHost = 64
	t.WriteBufferSize = 128 << 10
	t.ReadBufferSize = 128 << 10
	return t
}()

func newProxy(function string, target *url.URL, timeout time.Duration, log *slog.Logger) *proxy {
	p := &proxy{function: function, timeout: timeout, log: log}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Append the client to the X-Forwarded-For received (login counts hops from
			// the right: TRUSTED_PROXY_HOPS).
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
			// Behind the cluster's ingress, what it says about the original request stands.
			for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
				if v := pr.In.Header.Get(h); v != "" {
					pr.Out.Header.Set(h, v)
				}
			}
			// The function's span is a child of web's (kit_telemetry.go).
			propagator.Inject(pr.In.Context(), propagation.HeaderCarrier(pr.Out.Header))
		},
		Transport:     upstreamTransport,
		FlushInterval: -1, // downloads reach the client as they come
		ModifyResponse: func(resp *http.Response) error {
			passEarlyRefusal(resp)
			keepPasswordDialogAway(resp)
			return nil
		},
		ErrorHandler: p.unavailable,
	}
	return p
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.timeout > 0 {
		// func-go's server cuts a request after 30 s; an upload or a download legitimately
		// takes longer. The function behind answers first (its own timeout is shorter).
		rc := http.NewResponseController(w)
		deadline := time.Now().Add(p.timeout)
		if err := rc.SetReadDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
			p.log.Warn("cannot extend read deadline", "err", err)
		}
		if err := rc.SetWriteDeadline(deadline.Add(time.Minute)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			p.log.Warn("cannot extend write deadline", "err", err)
		}
	}
	if r.ContentLength != 0 {
		body := &trackedBody{ReadCloser: r.Body}
		r.Body = body
		r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, body))
	}
	p.rp.ServeHTTP(w, r)
}

// passEarlyRefusal keeps "Connection: close" on an answer given before the request's body was
// read to its end (an upload refused at once, or cut off by upload's timeout). The proxy drops
// the upstream's Connection header as hop-by-hop; without one of its own, the server would
// read the rest of the body before answering, and a client still sending would wait forever.
func passEarlyRefusal(resp *http.Response) {
	if resp.Close || bodyUnread(resp.Request.Context()) {
		resp.Header.Set("Connection", "close")
	}
}

// keepPasswordDialogAway drops "WWW-Authenticate: Basic" (login's answer to a wrong password)
// from answers to the web app's own requests, which say X-Requested-With: a browser would
// otherwise open its password dialog over the page, and the page's fetch would wait for it.
func keepPasswordDialogAway(resp *http.Response) {
	if resp.Request.Header.Get("X-Requested-With") != "" &&
		strings.HasPrefix(strings.ToLower(resp.Header.Get("WWW-Authenticate")), "basic") {
		resp.Header.Del("WWW-Authenticate")
	}
}

// unavailable answers 502 when the function cannot be reached or fails mid-answer.
func (p *proxy) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	p.log.Warn("function unreachable", "to", p.function, "path", r.URL.Path, "err", err)
	if bodyUnread(r.Context()) {
		w.Header().Set("Connection", "close")
	}
	writeError(w, http.StatusBadGateway, p.function+" is unavailable, try again")
}

// trackedBody records whether a request body was read to its end.
type trackedBody struct {
	io.ReadCloser
	sawEOF atomic.Bool
}

type bodyKey struct{}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.sawEOF.Store(true)
	}
	return n, err
}

// bodyUnread reports whether the request of ctx has a body not yet read to its end.
func bodyUnread(ctx context.Context) bool {
	b, ok := ctx.Value(bodyKey{}).(*trackedBody)
	return ok && !b.sawEOF.Load()
}
