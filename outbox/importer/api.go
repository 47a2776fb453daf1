package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// maxBodyBytes bounds one answer, so memory stays bounded whatever the
// provider sends: a full page of 500 Clerk users is a few MB.
const maxBodyBytes = 64 << 20

// errBodyTooLarge is an answer above maxBodyBytes; asking again will not
// shrink it.
var errBodyTooLarge = fmt.Errorf("answer larger than %d MiB: lower --page-size", maxBodyBytes>>20)

// apiClient sends GET requests to one provider's API with its credentials,
// a timeout on each request, and retries where they can help: a 429 after
// its Retry-After, a 5xx or a failed connection after a backoff.
type apiClient struct {
	cfg      Config
	provider string
	base     *url.URL
	headers  http.Header
	secrets  []string
	logger   *slog.Logger
}

// answer is one HTTP response, its body read in full.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func newAPIClient(cfg Config, headers http.Header) (*apiClient, error) {
	base, err := url.Parse(cfg.APIURL)
	if err != nil {
		return nil, fmt.Errorf("API URL: %w", err)
	}
	headers.Set("Accept", "application/json")
	headers.Set("User-Agent", "usersync-import")
	return &apiClient{
		cfg:      cfg,
		provider: cfg.Provider,
		base:     base,
		headers:  headers,
		secrets:  cfg.Credentials.secrets(),
		logger:   cfg.Logger,
	}, nil
}

// endpoint is the base URL followed by the path segments, each escaped on
// its own: a user id cannot add or remove path segments.
func (c *apiClient) endpoint(query url.Values, segments ...string) *url.URL {
	u := *c.base
	plain, escaped := strings.TrimSuffix(c.base.Path, "/"), strings.TrimSuffix(c.base.EscapedPath(), "/")
	for _, s := range segments {
		plain += "/" + s
		escaped += "/" + url.PathEscape(s)
	}
	u.Path, u.RawPath, u.RawQuery = plain, escaped, query.Encode()
	return &u
}

// get returns the body of a 2xx answer to GET u. A 404 is errNotFound and a
// 401 or 403 an *AuthError, at once; a 429, a 5xx or a transport error is
// retried up to MaxAttempts times; any other status is a *StatusError.
func (c *apiClient) get(ctx context.Context, u *url.URL) ([]byte, error) {
	request := "GET " + u.EscapedPath()
	for attempt := 1; ; attempt++ {
		ans, err := c.once(ctx, u)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		delay, retryable, err := c.judge(request, ans, err, attempt)
		if err == nil {
			return ans.body, nil
		}
		if !retryable {
			return nil, err
		}
		if attempt >= c.cfg.MaxAttempts {
			return nil, fmt.Errorf("%s gave up after %d attempts: %w", request, attempt, err)
		}
		c.logger.Warn("retrying a provider request", "request", request, "attempt", attempt,
			"delay", delay.String(), "reason", err.Error())
		if err := c.cfg.sleep(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// once sends one request under its own timeout and reads the whole body.
func (c *apiClient) once(ctx context.Context, u *url.URL) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return answer{}, err
	}
	req.Header = c.headers.Clone()
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return answer{}, fmt.Errorf("read the answer: %w", err)
	}
	if len(body) > maxBodyBytes {
		return answer{}, errBodyTooLarge
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// judge decides what an attempt's outcome means: err nil for a usable
// answer; else whether to retry, and after how long.
func (c *apiClient) judge(request string, ans answer, err error, attempt int) (delay time.Duration, retryable bool, _ error) {
	backoffDelay := backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			return 0, false, err
		}
		// Timeouts, refused and reset connections, truncated bodies: the
		// request may go through next time. The error names the URL, which
		// holds no credential (they travel in headers).
		return backoffDelay, true, errors.New(c.scrub(err.Error()))
	}
	switch s := ans.status; {
	case s >= 200 && s < 300:
		return 0, false, nil
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return 0, false, &AuthError{Provider: c.provider, Status: s, Detail: c.detail(ans.body)}
	case s == http.StatusNotFound:
		return 0, false, errNotFound
	case s == http.StatusTooManyRequests || s >= 500:
		serr := &StatusError{Provider: c.provider, Request: request, Status: s, Detail: c.detail(ans.body)}
		wait, ok := retryAfter(ans.header, c.cfg.now())
		if !ok {
			return backoffDelay, true, serr
		}
		if wait > c.cfg.MaxRetryAfter {
			return 0, false, fmt.Errorf("%w; it asks to retry after %s, longer than the %s this import waits: run it again later", serr, wait, c.cfg.MaxRetryAfter)
		}
		return wait, true, serr
	default:
		return 0, false, &StatusError{Provider: c.provider, Request: request, Status: s, Detail: c.detail(ans.body)}
	}
}

// detail shortens an answer's body for an error message: one line, valid
// UTF-8, at most 300 bytes, with any credential removed in case the
// provider echoes a header back.
func (c *apiClient) detail(body []byte) string {
	const limit = 300
	s := c.scrub(strings.Join(strings.Fields(string(body)), " "))
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strings.ToValidUTF8(s, string(utf8.RuneError))
}

// scrub removes the credentials from s.
func (c *apiClient) scrub(s string) string {
	for _, secret := range c.secrets {
		s = strings.ReplaceAll(s, secret, "xxxxx")
	}
	return s
}
