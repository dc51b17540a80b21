package function

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	gomail "github.com/wneessen/go-mail"
	"go.opentelemetry.io/otel/attribute"
)

// newSMTPClient builds a go-mail client from smtp://user:pass@host:587 (STARTTLS when
// offered) or smtps://user:pass@host:465 (implicit TLS). Errors never contain the password.
func newSMTPClient(raw string, timeout time.Duration) (*gomail.Client, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, credentials included
		}
		return nil, "", fmt.Errorf("SMTP_URL is not a valid URL: %v", err)
	}
	port := 587
	if u.Scheme == "smtps" {
		port = 465
	} else if u.Scheme != "smtp" {
		return nil, "", fmt.Errorf("SMTP_URL: scheme %q is not smtp or smtps", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, "", errors.New("SMTP_URL has no host")
	}
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, "", fmt.Errorf("SMTP_URL: bad port %q", p)
		}
	}
	skipVerify := false
	for k, v := range u.Query() {
		switch k {
		case "insecure_skip_verify":
			if skipVerify, err = strconv.ParseBool(v[0]); err != nil {
				return nil, "", fmt.Errorf("SMTP_URL: insecure_skip_verify=%q is not a boolean", v[0])
			}
		default:
			return nil, "", fmt.Errorf("SMTP_URL: unknown parameter %q", k)
		}
	}
	opts := []gomail.Option{
		gomail.WithPort(port),
		// go-mail applies its timeout to each of four stages (dial; greeting, TLS and AUTH;
		// MAIL to the end of DATA; RSET and QUIT): a quarter each bounds the whole send by
		// SMTP_TIMEOUT, within the Triggers' delivery timeout.
		gomail.WithTimeout(max(timeout/4, time.Second)),
		gomail.WithTLSConfig(&tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: skipVerify}), //nolint:gosec // opt-in knob for self-signed test servers
	}
	if u.Scheme == "smtps" {
		opts = append(opts, gomail.WithSSL())
	} else {
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	}
	if user := u.User.Username(); user != "" {
		pass, _ := u.User.Password()
		// Auto-discovery never sends PLAIN/LOGIN credentials over an unencrypted connection.
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(user), gomail.WithPassword(pass))
	}
	c, err := gomail.NewClient(u.Hostname(), opts...)
	if err != nil {
		return nil, "", fmt.Errorf("SMTP_URL: %w", err)
	}
	return c, fmt.Sprintf("%s://%s:%d", u.Scheme, u.Hostname(), port), nil
}

// send delivers msg over SMTP, or writes it into the outbox without SMTP_URL.
func (rt *runtime) send(ctx context.Context, log *slog.Logger, n notice, msg *gomail.Msg, subject string) (err error) {
	ctx, span := startSpan(ctx, "smtp.send", attribute.String("email.kind", n.kind))
	defer func() { endSpan(span, err); countEmail(ctx, n.kind, err) }()
	if rt.smtp == nil {
		path, err := writeEML(rt.mailDir, n.videoFID+"-"+n.kind+".eml", msg)
		if err != nil {
			return fmt.Errorf("writing the outbox: %w", err)
		}
		log.Info("email written to the outbox", "to", n.to, "subject", subject, "path", path)
		return nil
	}
	dial, cancel := context.WithTimeout(ctx, rt.timeout)
	defer cancel()
	if err := rt.smtp.DialAndSendWithContext(dial, msg); err != nil {
		return err
	}
	log.InfoContext(ctx, "email sent", "to", n.to, "subject", subject, "smtp", rt.smtpAddr)
	return nil
}

// permanent reports whether the mail server rejected the message for good (5xx), or the
// message cannot be built; anything else (refused, timeout, 4xx) is worth a retry.
func permanent(err error) bool {
	var bad *badMessage
	if errors.As(err, &bad) {
		return true
	}
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Reason {
	case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
		return true
	}
	return !se.IsTemp() && se.ErrorCode() >= 500 && se.ErrorCode() < 600
}

// writeEML writes msg to dir/name atomically (temp file + rename) and returns the path.
func writeEML(dir, name string, msg *gomail.Msg) (string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*.eml")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := msg.WriteTo(tmp); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.Rename(tmp.Name(), path)
}
