package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// ExpiringVerifier is a Verifier that also says until when a token it accepted stays valid.
type ExpiringVerifier interface {
	Verifier
	// VerifyUntil is VerifyIdentity, and also returns the last instant at which the token is
	// accepted.
	VerifyUntil(token string) (id Identity, until time.Time, err error)
}

// VerifyUntil implements ExpiringVerifier: the token is accepted until its `exp` plus the leeway.
func (h HS256) VerifyUntil(token string) (Identity, time.Time, error) {
	c, err := h.parse(token)
	if err != nil {
		return Identity{}, time.Time{}, err
	}
	return c.identity(), c.ExpiresAt.Add(leeway), nil
}

// Cache remembers tokens its verifier accepted, so a client that sends the same token again and
// again (a poll loop) pays for one signature check, not one per request. A remembered token is
// accepted only until the instant its verifier said it expires, on Cache's clock; tokens that
// failed are never remembered. The cache holds at most Max tokens, keyed by a SHA-256 digest
// (so a long token costs 32 bytes of key).
type Cache struct {
	V   ExpiringVerifier
	Max int // 0 means DefaultCacheSize
	Now func() time.Time

	mu sync.RWMutex
	m  map[[sha256.Size]byte]cached
}

type cached struct {
	id    Identity
	until time.Time
}

// DefaultCacheSize is Cache's default bound.
const DefaultCacheSize = 10_000

// NewCache returns a Cache in front of v, or v itself when v cannot say when its tokens expire.
func NewCache(v Verifier, max int) Verifier {
	ev, ok := v.(ExpiringVerifier)
	if !ok {
		return v
	}
	return &Cache{V: ev, Max: max}
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Verify implements Verifier.
func (c *Cache) Verify(token string) (string, error) {
	id, err := c.VerifyIdentity(token)
	return id.Sub, err
}

// VerifyIdentity implements IdentityVerifier.
func (c *Cache) VerifyIdentity(token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.RLock()
	hit, ok := c.m[key]
	c.mu.RUnlock()
	if ok && !now.After(hit.until) {
		return hit.id, nil
	}
	id, until, err := c.V.VerifyUntil(token)
	if err != nil {
		if ok {
			c.mu.Lock()
			delete(c.m, key)
			c.mu.Unlock()
		}
		return Identity{}, err
	}
	if now.After(until) {
		return id, nil // the verifier's clock is behind ours; do not remember
	}
	limit := c.Max
	if limit <= 0 {
		limit = DefaultCacheSize
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[[sha256.Size]byte]cached{}
	}
	if _, present := c.m[key]; !present && len(c.m) >= limit {
		// Drop the expired entries; if none is, drop arbitrary ones (map order is random).
		for k, v := range c.m {
			if now.After(v.until) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < limit {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = cached{id: id, until: until}
	c.mu.Unlock()
	return id, nil
}

// Len is the number of tokens remembered.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

var (
	_ ExpiringVerifier = HS256{}
	_ IdentityVerifier = (*Cache)(nil)
)
