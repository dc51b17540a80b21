package function

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): a
// client that logged in successfully gets a signed cookie naming the user, and later
// logins that show it are counted against that device's own bucket, not against the
// account's bucket that every other client shares. Guessers without the cookie lock
// each other out, never the owner. A cookie is bound to the user's id and credential
// version, so a password change or reset retires every device's standing.
const (
	deviceCookie    = "mp3converter_device"
	deviceCookieAge = 90 * 24 * time.Hour
)

// device is what a valid device cookie says.
type device struct {
	userID  int64
	version int64
	nonce   string
}

// deviceCookieFor returns a fresh device cookie for the user.
func (s *state) deviceCookieFor(c credentials) *http.Cookie {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	payload := strconv.FormatInt(c.id, 10) + "." + strconv.FormatInt(c.version, 10) + "." +
		hex.EncodeToString(nonce) + "." + strconv.FormatInt(time.Now().Add(deviceCookieAge).Unix(), 10)
	return &http.Cookie{
		Name:     deviceCookie,
		Value:    payload + "." + s.deviceMAC(payload),
		Path:     "/",
		MaxAge:   int(deviceCookieAge / time.Second),
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteStrictMode,
	}
}

// trustedDevice returns the device of r's cookie if it is genuine, unexpired and
// belongs to this user at this credential version.
func (s *state) trustedDevice(r *http.Request, c credentials) (device, bool) {
	cookie, err := r.Cookie(deviceCookie)
	if err != nil {
		return device{}, false
	}
	i := strings.LastIndexByte(cookie.Value, '.')
	if i < 0 {
		return device{}, false
	}
	payload, mac := cookie.Value[:i], cookie.Value[i+1:]
	if !hmac.Equal([]byte(mac), []byte(s.deviceMAC(payload))) {
		return device{}, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 4 {
		return device{}, false
	}
	id, err1 := strconv.ParseInt(parts[0], 10, 64)
	version, err2 := strconv.ParseInt(parts[1], 10, 64)
	expires, err3 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || id != c.id || version != c.version || time.Now().Unix() > expires {
		return device{}, false
	}
	return device{userID: id, version: version, nonce: parts[2]}, true
}

func (s *state) deviceMAC(payload string) string {
	m := hmac.New(sha256.New, s.keys.deviceKey)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
