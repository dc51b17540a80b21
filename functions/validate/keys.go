package function

import (
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// verifyKeys is the configured algorithm with its verification key.
type verifyKeys struct {
	method jwt.SigningMethod
	key    any    // *rsa.PublicKey or []byte
	kid    string // RFC 7638 thumbprint; "" with HS256
	jwk    *jwk   // nil with HS256
}

// keyFunc returns the one key; a token naming another key id is refused.
// A token without kid is accepted: there is only one key to try.
func (k verifyKeys) keyFunc(t *jwt.Token) (any, error) {
	if kid, ok := t.Header["kid"]; ok && k.kid != "" && kid != k.kid {
		return nil, errUnknownKid
	}
	return k.key, nil
}

// loadVerifyKeys: HS256 when JWT_SECRET is set; else RS256 with JWT_PUBLIC_KEY(_FILE),
// or the public half of JWT_PRIVATE_KEY(_FILE). Both given must match.
func loadVerifyKeys(cfg map[string]string) (verifyKeys, error) {
	if secret := cfg["JWT_SECRET"]; secret != "" {
		if len(secret) < minSecretBytes {
			return verifyKeys{}, fmt.Errorf("JWT_SECRET must be at least %d bytes", minSecretBytes)
		}
		return verifyKeys{method: jwt.SigningMethodHS256, key: []byte(secret)}, nil
	}
	pubPEM, err := pemSetting(cfg, "JWT_PUBLIC_KEY")
	if err != nil {
		return verifyKeys{}, err
	}
	privPEM, err := pemSetting(cfg, "JWT_PRIVATE_KEY")
	if err != nil {
		return verifyKeys{}, err
	}
	var pub *rsa.PublicKey
	if pubPEM != "" {
		if pub, err = parseRSAPublicKey(pubPEM); err != nil {
			return verifyKeys{}, fmt.Errorf("JWT_PUBLIC_KEY: %w", err)
		}
	}
	if privPEM != "" {
		priv, err := parseRSAPrivateKey(privPEM)
		if err != nil {
			return verifyKeys{}, fmt.Errorf("JWT_PRIVATE_KEY: %w", err)
		}
		if pub != nil && !pub.Equal(&priv.PublicKey) {
			return verifyKeys{}, errors.New("JWT_PUBLIC_KEY is not the public half of JWT_PRIVATE_KEY")
		}
		pub = &priv.PublicKey
	}
	if pub == nil {
		return verifyKeys{}, errors.New("no verification key: set JWT_PUBLIC_KEY, JWT_PRIVATE_KEY (or their _FILE forms) for RS256, or JWT_SECRET for HS256")
	}
	if err := checkRSABits(pub); err != nil {
		return verifyKeys{}, err
	}
	k := jwkOf(pub)
	return verifyKeys{method: jwt.SigningMethodRS256, key: pub, kid: k.Kid, jwk: k}, nil
}
