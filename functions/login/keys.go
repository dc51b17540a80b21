package function

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// signingKeys is the configured algorithm with its keys.
type signingKeys struct {
	method jwt.SigningMethod
	sign   any // *rsa.PrivateKey or []byte
	verify any // *rsa.PublicKey or []byte
	kid    string

	deviceKey []byte // signs device cookies (device.go); derived from the signing key
}

// deriveDeviceKey makes the device cookies' HMAC key from the token signing key, so no
// further secret has to be managed; the label keeps the two uses apart.
func deriveDeviceKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("mp3converter login device cookie"))
	return m.Sum(nil)
}

func (k signingKeys) keyFunc(t *jwt.Token) (any, error) {
	if kid, ok := t.Header["kid"]; ok && k.kid != "" && kid != k.kid {
		return nil, errors.New("unknown kid")
	}
	return k.verify, nil
}

// loadSigningKeys: HS256 when JWT_SECRET is set, else RS256 from JWT_PRIVATE_KEY
// or JWT_PRIVATE_KEY_FILE.
func loadSigningKeys(cfg map[string]string) (signingKeys, error) {
	if secret := cfg["JWT_SECRET"]; secret != "" {
		if len(secret) < minSecretBytes {
			return signingKeys{}, fmt.Errorf("JWT_SECRET must be at least %d bytes", minSecretBytes)
		}
		return signingKeys{method: jwt.SigningMethodHS256, sign: []byte(secret), verify: []byte(secret), deviceKey: deriveDeviceKey([]byte(secret))}, nil
	}
	pemText, err := pemSetting(cfg, "JWT_PRIVATE_KEY")
	if err != nil {
		return signingKeys{}, err
	}
	if pemText == "" {
		return signingKeys{}, errors.New("no signing key: set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE (RS256) or JWT_SECRET (HS256)")
	}
	key, err := parseRSAPrivateKey(pemText)
	if err == nil {
		err = checkRSABits(&key.PublicKey)
	}
	if err != nil {
		return signingKeys{}, fmt.Errorf("JWT_PRIVATE_KEY: %w", err)
	}
	return signingKeys{method: jwt.SigningMethodRS256, sign: key, verify: &key.PublicKey, kid: jwkOf(&key.PublicKey).Kid,
		deviceKey: deriveDeviceKey(x509.MarshalPKCS1PrivateKey(key))}, nil
}
