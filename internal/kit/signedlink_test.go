package kit

import (
	"net/url"
	"testing"
	"time"
)

func TestSignedLinks(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	old := newLinkSigner("the previous secret, 32 bytes long!", "")
	l := newLinkSigner("the current secret, at least 32 bytes", "the previous secret, 32 bytes long!")
	parse := func(q string) url.Values {
		v, err := url.ParseQuery(q)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	good := parse(l.query("fid1", "ada@example.com", now.Add(time.Hour)))
	if !l.valid(good.Get("fid"), "ada@example.com", good.Get("exp"), good.Get("sig"), now) {
		t.Fatal("a fresh link is refused")
	}
	rotated := parse(old.query("fid1", "ada@example.com", now.Add(time.Hour)))
	if !l.valid("fid1", "ada@example.com", rotated.Get("exp"), rotated.Get("sig"), now) {
		t.Error("a link signed with LINK_SECRET_PREVIOUS is refused")
	}
	if newLinkSigner("the current secret, at least 32 bytes", "").valid("fid1", "ada@example.com", rotated.Get("exp"), rotated.Get("sig"), now) {
		t.Error("a link of a retired key is accepted")
	}
	sig := good.Get("sig")
	tampered := []byte(sig)
	tampered[3] ^= 1
	for name, c := range map[string][4]string{
		"another fid":    {"fid2", "ada@example.com", good.Get("exp"), sig},
		"another owner":  {"fid1", "bob@example.com", good.Get("exp"), sig},
		"a later expiry": {"fid1", "ada@example.com", "1800007200", sig},
		"a tampered sig": {"fid1", "ada@example.com", good.Get("exp"), string(tampered)},
		"no sig":         {"fid1", "ada@example.com", good.Get("exp"), ""},
		"a bad expiry":   {"fid1", "ada@example.com", "soon", sig},
	} {
		if l.valid(c[0], c[1], c[2], c[3], now) {
			t.Errorf("%s: accepted", name)
		}
	}
	if l.valid("fid1", "ada@example.com", good.Get("exp"), sig, now.Add(2*time.Hour)) {
		t.Error("an expired link is accepted")
	}
}
