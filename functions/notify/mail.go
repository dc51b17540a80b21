package function

import (
	"fmt"
	htmltemplate "html/template"
	"math"
	"net/mail"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"

	gomail "github.com/wneessen/go-mail"
)

// Kinds of email; also the suffix of the outbox file name.
const (
	kindReady  = "ready"
	kindFailed = "failed"
)

// notice is one email to send about one job.
type notice struct {
	kind     string // kindReady or kindFailed
	videoFID string
	to       string
	name     string  // ready: the MP3's filename; failed: the video's filename
	mp3FID   string  // ready
	duration float64 // ready, seconds
	reason   string  // failed
}

// badMessage is an email that cannot be built (e.g. the username is no address): permanent.
type badMessage struct{ err error }

func (b *badMessage) Error() string { return "cannot build the email: " + b.err.Error() }
func (b *badMessage) Unwrap() error { return b.err }

// mailView is what the templates show.
type mailView struct {
	Name, Duration, Link, FID, Reason, Valid string
}

var (
	readyText = texttemplate.Must(texttemplate.New("ready").Parse(`Hello,

your MP3 is ready.

  File:     {{.Name}}
  Duration: {{.Duration}}
  Download: {{.Link}}

Open the link in your browser to download it; it works for {{.Valid}}.
After that, sign in and download it from your files, or run

  mp3converter download {{.FID}}

-- 
mp3converter
`))
	failedText = texttemplate.Must(texttemplate.New("failed").Parse(`Hello,

we could not convert "{{.Name}}" to MP3.

  Reason: {{.Reason}}

What you can try:

  - check that the file plays on your computer and that it has sound
    (an audio track); a video without audio has nothing to convert;
  - if the file was cut short (an interrupted download or copy),
    get the complete file again;
  - upload the file again, or upload another file: most video and
    audio formats work.

-- 
mp3converter
`))
	readyHTML = htmltemplate.Must(htmltemplate.New("ready").Parse(`<!DOCTYPE html>
<html><body style="font-family: sans-serif">
<p>Hello,</p>
<p>your MP3 is ready.</p>
<table>
<tr><td>File:</td><td><strong>{{.Name}}</strong></td></tr>
<tr><td>Duration:</td><td>{{.Duration}}</td></tr>
<tr><td>Download:</td><td><a href="{{.Link}}">{{.Link}}</a></td></tr>
</table>
<p>Open the link to download it; it works for {{.Valid}}. After that, sign in and
download it from your files, or run <code>mp3converter download {{.FID}}</code>.</p>
<p>-- <br>mp3converter</p>
</body></html>
`))
	failedHTML = htmltemplate.Must(htmltemplate.New("failed").Parse(`<!DOCTYPE html>
<html><body style="font-family: sans-serif">
<p>Hello,</p>
<p>we could not convert <strong>{{.Name}}</strong> to MP3.</p>
<p>Reason: {{.Reason}}</p>
<p>What you can try:</p>
<ul>
<li>check that the file plays on your computer and that it has sound (an audio track);
a video without audio has nothing to convert;</li>
<li>if the file was cut short (an interrupted download or copy), get the complete file again;</li>
<li>upload the file again, or upload another file: most video and audio formats work.</li>
</ul>
<p>-- <br>mp3converter</p>
</body></html>
`))
)

// message builds the email of n: a text/plain part and a text/html alternative.
func (rt *runtime) message(n notice) (*gomail.Msg, string, error) {
	view := mailView{Name: oneLine(n.name), Reason: n.reason}
	subject := "We could not convert " + view.Name
	text, html := failedText, failedHTML
	if n.kind == kindReady {
		subject = "Your MP3 is ready: " + view.Name
		text, html = readyText, readyHTML
		view.Duration = formatDuration(n.duration)
		view.FID = n.mp3FID
		// Signed for the recipient, the file's owner: it opens in a plain browser tab.
		view.Link = rt.publicURL + "/download?" + rt.links.query(n.mp3FID, n.to, time.Now().Add(rt.linkTTL))
		view.Valid = formatValidity(rt.linkTTL)
	}
	m := gomail.NewMsg()
	if err := m.From(rt.from); err != nil {
		return nil, "", &badMessage{err}
	}
	if err := m.To(n.to); err != nil {
		return nil, "", &badMessage{err}
	}
	m.Subject(subject)
	m.SetDate()
	// A stable Message-ID lets mail clients recognise a duplicate, should one ever slip through.
	domain := "localhost"
	if a, err := mail.ParseAddress(rt.from); err == nil {
		if i := strings.LastIndexByte(a.Address, '@'); i >= 0 {
			domain = a.Address[i+1:]
		}
	}
	m.SetMessageIDWithValue(n.videoFID + "." + n.kind + "@" + domain)
	m.SetGenHeader("Auto-Submitted", "auto-generated")
	if err := m.SetBodyTextTemplate(text, view); err != nil {
		return nil, "", &badMessage{err}
	}
	if err := m.AddAlternativeHTMLTemplate(html, view); err != nil {
		return nil, "", &badMessage{err}
	}
	return m, subject, nil
}

// formatValidity says how long a link works, in days or hours.
func formatValidity(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	default:
		return d.Round(time.Minute).String()
	}
}

// oneLine replaces control characters (newlines included) by spaces.
func oneLine(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// formatDuration renders seconds as m:ss or h:mm:ss.
func formatDuration(sec float64) string {
	s := int64(math.Round(sec))
	if s < 1 && sec > 0 {
		s = 1
	}
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
