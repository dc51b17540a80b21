package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echo serves a line-echo server on loopback.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A bound on every read below: a proxy that hangs fails the test instead of blocking it.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// roundTrip sends a line and reads it back.
func roundTrip(c net.Conn, line string) (string, error) {
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func TestForwardCutRestore(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	before := dial(t, p.Addr())
	if got, err := roundTrip(before, "hello"); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	p.Cut()
	// The connection in flight is reset, not left hanging.
	if _, err := roundTrip(before, "again"); err == nil {
		t.Fatal("a connection in flight survived Cut")
	} else if isTimeout(err) {
		t.Fatalf("a connection in flight hung after Cut: %v", err)
	}
	// A new connection is refused: reset at connect or at the first read.
	if during, err := net.Dial("tcp", p.Addr()); err == nil {
		defer during.Close()
		during.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := roundTrip(during, "refused?"); err == nil || isTimeout(err) {
			t.Fatalf("a new connection during the cut: %v, want a reset", err)
		}
	}

	p.Restore()
	after := dial(t, p.Addr())
	if got, err := roundTrip(after, "back"); err != nil || got != "back" {
		t.Fatalf("after Restore: %q, %v", got, err)
	}
	s := p.Stats()
	if s.Forwarded != 2 || s.Refused != 1 || s.Aborted != 2 {
		t.Fatalf("stats %+v, want 2 forwarded, 1 refused, 2 aborted (both ends of one connection)", s)
	}
}

func TestUnreachableTargetIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		return // reset at connect
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := roundTrip(c, "anyone?"); err == nil || isTimeout(err) {
		t.Fatalf("got %v, want a reset", err)
	}
}

func TestHalfCloseIsForwarded(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := dial(t, p.Addr())
	io.WriteString(c, "last words")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c) // the echo server ends when it reads EOF
	if err != nil || string(got) != "last words" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
