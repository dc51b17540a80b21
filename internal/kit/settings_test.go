package kit

import (
	"strings"
	"testing"
	"time"
)

func TestLoadSettings(t *testing.T) {
	decl := []Setting{
		{Name: "URI", Kind: KindText, Required: true, Meaning: "where"},
		{Name: "BASE", Kind: KindURL, Meaning: "base"},
		{Name: "TTL", Kind: KindDuration, Default: "30s", Min: "0s", Max: "1m", Meaning: "ttl"},
		{Name: "N", Kind: KindInt, Default: "4", Min: "1", Meaning: "n"},
		{Name: "KEEP", Kind: KindBool, Default: "false", Meaning: "keep"},
	}
	s, err := loadSettings(decl, map[string]string{"URI": "x", "BASE": "https://h/", "TTL": "0s"})
	if err != nil {
		t.Fatal(err)
	}
	if s.text("URI") != "x" || s.text("BASE") != "https://h" || s.duration("TTL") != 0 || s.int("N") != 4 || s.bool("KEEP") {
		t.Errorf("values: %v", s)
	}
	for env, want := range map[string]string{
		"":           "URI is not set (where)",
		"BASE=ftp:x": `BASE: "ftp:x" is not an http(s) URL`,
		"TTL=61s":    `TTL: "61s" is not a duration from 0s to 1m`,
		"TTL=20":     `TTL: "20" is not a duration`,
		"N=0":        `N: "0" is not an integer of at least 1`,
		"KEEP=maybe": `KEEP: "maybe" is not true or false`,
	} {
		cfg := map[string]string{"URI": "x"}
		if env == "" {
			delete(cfg, "URI")
		} else {
			k, v, _ := strings.Cut(env, "=")
			cfg[k] = v
		}
		if _, err := loadSettings(decl, cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", env, err, want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("reading an undeclared setting did not panic")
		}
	}()
	_ = s.duration("URI")
}

func TestLifecycle(t *testing.T) {
	var l lifecycle[int]
	if l.started() || l.load() != nil || l.stop() != nil {
		t.Fatal("zero lifecycle is started")
	}
	a, b := 1, 2
	if l.start(&a) != nil || l.start(&b) != &a || l.load() != &b || !l.started() {
		t.Fatal("start does not publish or return the old state")
	}
	if l.stop() != &b || l.started() {
		t.Fatal("stop does not unpublish")
	}
	_ = time.Second
}
