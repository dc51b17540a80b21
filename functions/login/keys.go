package function

import (
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
		return signingKeys{method: jwt.SigningMethodHS256, sign: []byte(secret), verify: []byte(secret)}, nil
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
	return signingKeys{method: jwt.SigningMethodRS256, sign: key, verify: &key.PublicKey, kid: jwkOf(&key.PublicKey).Kid}, nil
}
