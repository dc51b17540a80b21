// Package mailtest is a real SMTP server on loopback (github.com/emersion/go-smtp)
// that records what it receives, for tests of the whole pipeline.
package mailtest

import (
	"bytes"
	"io"
	"net"
	"sync"

	"github.com/emersion/go-smtp"
)

// Message is one accepted email.
type Message struct {
	From string
	To   []string
	Data []byte // the raw RFC 5322 message
}

// Server accepts every message and records it.
type Server struct {
	URL      string // smtp://127.0.0.1:PORT, for SMTP_URL
	Received chan Message

	srv *smtp.Server
	mu  sync.Mutex
	all []Message
}

// Start serves on a free loopback port until Close.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "smtp://" + ln.Addr().String(), Received: make(chan Message, 1000)}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{server: s}, nil }))
	s.srv.Domain = "localhost"
	s.srv.AllowInsecureAuth = true
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// All returns every message received so far.
func (s *Server) All() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.all...)
}

type session struct {
	server *Server
	msg    Message
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.msg.From = from; return nil }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	s.msg.Data = buf.Bytes()
	s.server.mu.Lock()
	s.server.all = append(s.server.all, s.msg)
	s.server.mu.Unlock()
	s.server.Received <- s.msg
	s.msg = Message{}
	return nil
}

func (s *session) Reset()        { s.msg = Message{} }
func (s *session) Logout() error { return nil }
