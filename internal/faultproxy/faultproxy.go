// Package faultproxy is a TCP proxy on loopback for fault-injection tests. It
// forwards every connection to a target until Cut, which aborts the
// connections in flight and refuses new ones, as a crashed or unplugged
// server would, until Restore.
//
// "Abort" and "refuse" are TCP resets: a connection in flight is closed with
// SO_LINGER 0, and a new one is accepted and reset at once. Clients see
// "connection reset by peer" (or EOF) straight away, never a silent hang.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections from Addr to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cut     bool
	closed  bool
	conns   map[*net.TCPConn]struct{} // both ends of every proxied connection
	stats   Stats
	pending sync.WaitGroup
}

// Stats counts what the proxy has done since it started.
type Stats struct {
	Forwarded int // connections forwarded to the target
	Refused   int // connections reset because the proxy was cut (or the target was unreachable)
	Aborted   int // connections in flight reset by Cut
}

// dialTimeout bounds the connection to the target.
const dialTimeout = 5 * time.Second

// Start listens on a free loopback port and forwards to target ("host:port").
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*net.TCPConn]struct{}{}}
	p.pending.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut resets every connection in flight and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
		p.stats.Aborted++
	}
}

// Restore forwards new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Close stops listening, resets every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.pending.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.pending.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient accept error (e.g. too many files): keep serving
		}
		p.pending.Add(1)
		go func() {
			defer p.pending.Done()
			p.forward(c.(*net.TCPConn))
		}()
	}
}

// forward connects client to the target and copies both ways until both
// directions are done or Cut resets them.
func (p *Proxy) forward(client *net.TCPConn) {
	if p.isCut() {
		p.refuse(client)
		return
	}
	t, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		p.refuse(client)
		return
	}
	server := t.(*net.TCPConn)
	p.mu.Lock()
	if p.cut || p.closed {
		p.stats.Refused++
		p.mu.Unlock()
		reset(client)
		reset(server)
		return
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.stats.Forwarded++
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() { pipe(server, client) })
	wg.Go(func() { pipe(client, server) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
	client.Close()
	server.Close()
}

// pipe copies src to dst, then half-closes dst so the peer sees the end.
func pipe(dst, src *net.TCPConn) {
	_, _ = io.Copy(dst, src)
	_ = dst.CloseWrite()
}

func (p *Proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

func (p *Proxy) refuse(c *net.TCPConn) {
	p.mu.Lock()
	p.stats.Refused++
	p.mu.Unlock()
	reset(c)
}

// reset closes c with a TCP RST instead of the orderly FIN.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
