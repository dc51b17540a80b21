package kit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"
)

// minLinkSecret is the shortest LINK_SECRET accepted: an HMAC-SHA256 key
// needs 32 bytes to be as strong as the hash.
const minLinkSecret = 32

// linkSigner makes and checks signed download links: /download?fid=&exp=&sig=,
// where sig is an HMAC-SHA256 over the fid, the file's owner and the expiry.
// Such a link downloads one MP3 in a plain browser tab, with no token, until
// it expires. keys[0] signs (LINK_SECRET); every key verifies, so a key can
// be rotated while the links made with the previous one (LINK_SECRET_PREVIOUS)
// still work.
type linkSigner struct {
	keys [][]byte
}

func newLinkSigner(secret, previous string) linkSigner {
	l := linkSigner{keys: [][]byte{[]byte(secret)}}
	if previous != "" {
		l.keys = append(l.keys, []byte(previous))
	}
	return l
}

// query is the query string of a link to fid for owner, valid until exp.
func (l linkSigner) query(fid, owner string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return url.Values{"fid": {fid}, "exp": {e}, "sig": {l.mac(l.keys[0], fid, owner, e)}}.Encode()
}

// valid tells whether sig signs fid for owner until exp (Unix seconds), and
// exp is not past. The comparison takes the same time whatever the bytes.
func (l linkSigner) valid(fid, owner, exp, sig string, now time.Time) bool {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() > e {
		return false
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil {
		return false
	}
	ok := false
	for _, key := range l.keys {
		want, _ := base64.RawURLEncoding.DecodeString(l.mac(key, fid, owner, exp))
		ok = hmac.Equal(got, want) || ok
	}
	return ok
}

func (l linkSigner) mac(key []byte, fid, owner, exp string) string {
	m := hmac.New(sha256.New, key)
	// Lengths first: no two (fid, owner, exp) triples write the same bytes.
	for _, part := range []string{"mp3converter download link v1", fid, owner, exp} {
		m.Write([]byte(strconv.Itoa(len(part)) + ":" + part))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
