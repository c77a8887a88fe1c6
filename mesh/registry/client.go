package registry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// Link relations of the controller's base resource (confine.md §3). Before
// 2015 the controller used the "server" namespace.
const (
	relPrefixV1 = "http://confine-project.eu/rel/registry/"
	relPrefixV0 = "http://confine-project.eu/rel/server/"
)

// Dialects of the registry API.
const (
	DialectV1 = "v1" // controller v1 (2015 on): top-level "tinc"
	DialectV0 = "v0" // pre-2015: mgmt_net.tinc_client / tinc_server
)

// Defaults of Options.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultRetries      = 4
	DefaultRetryWaitMin = 500 * time.Millisecond
	DefaultRetryWaitMax = 10 * time.Second
	DefaultMaxBodyBytes = 512 << 20
	DefaultUserAgent    = "mgmtnet"
)

// Options configure a Client. The zero value is usable: system TLS roots
// and the defaults above.
type Options struct {
	// CAFile is a PEM bundle to verify the registry's TLS certificate
	// against, instead of the system roots (nodes pin
	// registry-server.crt). Empty means the system roots.
	CAFile string
	// Insecure skips TLS verification. It is an explicit opt-in and
	// cannot be combined with CAFile.
	Insecure bool
	// Timeout bounds each HTTP attempt's wait for progress: connecting,
	// the TLS handshake, the response headers, and any stall while the
	// body is read. It does not bound the whole transfer, so a large list
	// over a slow community link is not cut off while bytes still flow.
	// Default DefaultTimeout.
	Timeout time.Duration
	// Retries is how many times a request is retried after a connection
	// error, a stalled body, a 429 or a 5xx, with exponential backoff and
	// jitter between RetryWaitMin and RetryWaitMax. 4xx are not retried.
	// Default DefaultRetries; negative means none.
	Retries int
	// RetryWaitMin and RetryWaitMax bound the backoff between retries.
	// Defaults DefaultRetryWaitMin and DefaultRetryWaitMax.
	RetryWaitMin, RetryWaitMax time.Duration
	// MaxBodyBytes limits each response body; a larger body is an error
	// that says so. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives debug logs of requests and warnings about failed
	// attempts. Nil discards.
	Logger *slog.Logger
	// UserAgent is sent with every request. Default DefaultUserAgent.
	UserAgent string
	// Progress, if set, is called after each page of a member collection
	// with the collection's URL and the number of members read from it so
	// far.
	Progress func(collection string, members int)
}

// Client reads a CONFINE registry. It is safe for concurrent use.
type Client struct {
	base *url.URL
	opts Options
	log  *slog.Logger
	http *retryablehttp.Client
}

// New returns a client of the registry whose base resource is baseURI
// (e.g. "https://[fdf5:5351:1dfd::2]/api/"). The URI must be absolute http
// or https; a missing final slash is added, as the controller's
// collections are relative to the base.
func New(baseURI string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURI)
	if err != nil {
		return nil, fmt.Errorf("registry uri %q: %w", baseURI, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("registry uri %q: want an absolute http:// or https:// URI", baseURI)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("registry uri %q: no host", baseURI)
	}
	if u.User != nil {
		return nil, fmt.Errorf("registry uri %q: credentials in the URI are not supported (reads are anonymous)", baseURI)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.Fragment = ""
	if opts.Insecure && opts.CAFile != "" {
		return nil, errors.New("registry options: --insecure and a CA file exclude each other")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	} else if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.RetryWaitMin <= 0 {
		opts.RetryWaitMin = DefaultRetryWaitMin
	}
	if opts.RetryWaitMax <= 0 {
		opts.RetryWaitMax = DefaultRetryWaitMax
	}
	if opts.RetryWaitMax < opts.RetryWaitMin {
		opts.RetryWaitMax = opts.RetryWaitMin
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultUserAgent
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case opts.Insecure:
		tlsConf.InsecureSkipVerify = true
	case opts.CAFile != "":
		pemBytes, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read registry CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("registry CA file %s: no PEM certificate in it", opts.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	timeout := opts.Timeout
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &stallConn{Conn: conn, timeout: timeout}, nil
		},
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}
	rc := &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport: transport,
			// A registry does not redirect across hosts; the standard
			// policy (10 redirects) is fine.
		},
		Logger:       leveledLogger{log},
		RetryWaitMin: opts.RetryWaitMin,
		RetryWaitMax: opts.RetryWaitMax,
		RetryMax:     opts.Retries,
		CheckRetry:   checkRetry,
		Backoff:      jitterBackoff,
		ErrorHandler: func(resp *http.Response, err error, tries int) (*http.Response, error) {
			if err == nil && resp != nil {
				// Retries exhausted on a 5xx/429: let the caller report
				// the status.
				return resp, nil
			}
			if resp != nil {
				resp.Body.Close()
			}
			var perm *permanentError
			if errors.As(err, &perm) {
				return nil, perm
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // get() names the URL
			}
			if tries > 1 {
				return nil, fmt.Errorf("giving up after %d attempts: %w", tries, err)
			}
			return nil, err
		},
	}
	return &Client{base: u, opts: opts, log: log, http: rc}, nil
}

// BaseURI returns the registry's base URI as the client uses it.
func (c *Client) BaseURI() string { return c.base.String() }

// Snapshot is everything the registry says about the management network at
// one fetch.
type Snapshot struct {
	// Prefix is testbed_params.mgmt_ipv6_prefix of the base resource;
	// invalid (the zero Prefix) when the registry gives none or an
	// unparsable one (which is logged).
	Prefix netip.Prefix
	// Candidates are the members: servers, then hosts, then nodes, each
	// in the registry's order. Nil when NotModified.
	Candidates []mesh.Candidate
	// Problems are list elements that could not even be decoded. Callers
	// report them as rejected, next to mesh.Build's rejections.
	Problems []mesh.Problem
	// NotModified reports that every member collection answered 304 to
	// the validators given: nothing changed, Candidates is nil.
	NotModified bool
	// Validators maps each member collection's URL to the ETag of this
	// fetch, to persist and pass to the next Fetch. A collection the
	// registry paginated has none (the first page's ETag cannot vouch for
	// the others), so it is read in full every time.
	Validators map[string]string
	// Dialect is DialectV0 when the base used the pre-2015 relations or
	// any member had the pre-2015 mgmt_net shape, else DialectV1.
	Dialect string
}

// collection is one member collection to fetch.
type collection struct {
	kind addressing.Kind
	rel  string // "server-list"...
	url  string
}

// Fetch reads the base resource and every member collection (servers,
// hosts, nodes), following pagination. validators, if not nil, maps
// collection URLs to ETags of an earlier fetch: when every collection is
// unchanged the result is NotModified; when only some are, the unchanged
// ones are fetched again in full so that Candidates is always complete.
func (c *Client) Fetch(ctx context.Context, validators map[string]string) (*Snapshot, error) {
	baseURL := c.base.String()
	page, err := c.get(ctx, baseURL, "")
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Dialect: DialectV1, Validators: map[string]string{}}
	var base struct {
		TestbedParams struct {
			MgmtIPv6Prefix string `json:"mgmt_ipv6_prefix"`
		} `json:"testbed_params"`
	}
	if err := json.Unmarshal(page.body, &base); err != nil {
		return nil, fmt.Errorf("decode %s: want the registry's base object: %w", baseURL, describeJSONError(page.body, err))
	}
	if s := strings.TrimSpace(base.TestbedParams.MgmtIPv6Prefix); s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			c.log.Warn("registry gives an unparsable management prefix; ignoring it", "url", baseURL, "mgmt_ipv6_prefix", s, "err", err)
		} else {
			snap.Prefix = p
		}
	}
	cols, v0 := c.discover(baseURL, page.header)
	if v0 {
		snap.Dialect = DialectV0
	}
	c.log.Debug("registry collections", "base", baseURL, "servers", cols[0].url, "hosts", cols[1].url, "nodes", cols[2].url, "dialect", snap.Dialect)

	type result struct {
		elems       []json.RawMessage
		etag        string
		notModified bool
	}
	results := make([]result, len(cols))
	allNotModified := true
	for i, col := range cols {
		elems, etag, nm, err := c.fetchCollection(ctx, col.url, validators[col.url])
		if err != nil {
			return nil, err
		}
		results[i] = result{elems, etag, nm}
		if !nm {
			allNotModified = false
		}
	}
	if allNotModified {
		snap.NotModified = true
		for _, col := range cols {
			snap.Validators[col.url] = validators[col.url]
		}
		return snap, nil
	}
	for i, col := range cols {
		if !results[i].notModified {
			continue
		}
		c.log.Debug("collection unchanged but others changed; fetching it again in full", "url", col.url)
		elems, etag, _, err := c.fetchCollection(ctx, col.url, "")
		if err != nil {
			return nil, err
		}
		results[i] = result{elems: elems, etag: etag}
	}
	for i, col := range cols {
		d := decodeMembers(col.kind, col.url, results[i].elems)
		snap.Candidates = append(snap.Candidates, d.Candidates...)
		snap.Problems = append(snap.Problems, d.Problems...)
		if d.V0 {
			snap.Dialect = DialectV0
		}
		if results[i].etag != "" {
			snap.Validators[col.url] = results[i].etag
		}
	}
	return snap, nil
}

// discover finds the member collections in the base's Link header: the
// registry relations, else the pre-2015 server relations (v0 reports
// that), else the fixed paths relative to the base.
func (c *Client) discover(baseURL string, h http.Header) (cols []collection, v0 bool) {
	links := parseLinks(c.base, h.Values("Link"))
	cols = []collection{
		{kind: addressing.KindServer, rel: "server-list"},
		{kind: addressing.KindHost, rel: "host-list"},
		{kind: addressing.KindNode, rel: "node-list"},
	}
	fixed := map[string]string{"server-list": "servers/", "host-list": "hosts/", "node-list": "nodes/"}
	for i := range cols {
		if u, ok := links[relPrefixV1+cols[i].rel]; ok {
			cols[i].url = u
		} else if u, ok := links[relPrefixV0+cols[i].rel]; ok {
			cols[i].url = u
			v0 = true
		} else {
			cols[i].url = c.base.ResolveReference(&url.URL{Path: fixed[cols[i].rel]}).String()
		}
	}
	return cols, v0
}

// fetchCollection reads every page of a collection. The ETag is the
// response's, for an unpaginated collection; none for a paginated one. A
// 304 reports notModified.
func (c *Client) fetchCollection(ctx context.Context, colURL, validator string) (elems []json.RawMessage, etag string, notModified bool, err error) {
	seen := map[string]bool{}
	next := colURL
	for first := true; next != ""; first = false {
		if seen[next] {
			return nil, "", false, fmt.Errorf("get %s: pagination loops back to %s", colURL, next)
		}
		seen[next] = true
		inm := ""
		if first {
			inm = validator
		}
		p, err := c.get(ctx, next, inm)
		if err != nil {
			return nil, "", false, err
		}
		if p.notModified {
			if !first {
				return nil, "", false, fmt.Errorf("get %s: 304 Not Modified for a later page without a validator", next)
			}
			return nil, validator, true, nil
		}
		if first {
			etag = p.header.Get("ETag")
		}
		e, err := decodeList(next, p.body)
		if err != nil {
			return nil, "", false, err
		}
		elems = append(elems, e...)
		if c.opts.Progress != nil {
			c.opts.Progress(colURL, len(elems))
		}
		u, err := url.Parse(next)
		if err != nil {
			return nil, "", false, fmt.Errorf("get %s: %w", next, err)
		}
		next = parseLinks(u, p.header.Values("Link"))["next"]
	}
	if len(seen) > 1 {
		// The first page's ETag says nothing about later pages: a member
		// on page 7 may change while page 1 stays the same. So a
		// paginated collection gets no validator and is always read in
		// full.
		etag = ""
	}
	return elems, etag, false, nil
}

// page is one successful response.
type page struct {
	header      http.Header
	body        []byte
	notModified bool
}

// permanentError is a failure that retrying cannot fix (a 4xx, a wrong
// content type, a body over the limit).
type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// get fetches one URL with retries and returns its body, read in full
// within MaxBodyBytes. A body that fails mid-transfer is retried.
func (c *Client) get(ctx context.Context, target, ifNoneMatch string) (*page, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", target, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", ifNoneMatch)
	}
	var got *page
	// The body is read inside the retry loop, so that a transfer that
	// breaks or stalls is retried like a failed connection. retryablehttp
	// drains and closes the body before a retry; get closes it after
	// success.
	req.SetResponseHandler(func(resp *http.Response) error {
		switch {
		case resp.StatusCode == http.StatusNotModified:
			got = &page{header: resp.Header, notModified: true}
			return nil
		case resp.StatusCode < 200 || resp.StatusCode > 299:
			return &permanentError{statusError(target, resp)}
		}
		if err := checkJSON(resp.Header.Get("Content-Type")); err != nil {
			return &permanentError{fmt.Errorf("get %s: %w", target, err)}
		}
		body, err := readLimited(resp.Body, c.opts.MaxBodyBytes)
		if err != nil {
			var tooBig *bodyTooLargeError
			if errors.As(err, &tooBig) {
				return &permanentError{fmt.Errorf("get %s: %w", target, err)}
			}
			return fmt.Errorf("get %s: read body: %w", target, err)
		}
		got = &page{header: resp.Header, body: body}
		return nil
	})
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		var perm *permanentError
		switch {
		case errors.As(err, &perm):
			return nil, perm.err
		case ctx.Err() != nil:
			return nil, fmt.Errorf("get %s: %w", target, ctx.Err())
		}
		return nil, fmt.Errorf("get %s: %w", target, err)
	}
	defer resp.Body.Close()
	if got == nil {
		// Retries exhausted on a retryable status: the handler never ran.
		return nil, fmt.Errorf("%w (after %d attempts)", statusError(target, resp), c.opts.Retries+1)
	}
	c.log.Debug("registry get", "url", target, "status", resp.StatusCode, "bytes", len(got.body), "took", time.Since(start))
	return got, nil
}

// statusError describes an unwanted status, with a short excerpt of the
// body when it is text (a JSON error from the controller says why).
func statusError(target string, resp *http.Response) error {
	text := http.StatusText(resp.StatusCode)
	var detail string
	if b, _ := io.ReadAll(io.LimitReader(resp.Body, 200)); len(b) > 0 && isPrintable(b) {
		detail = ": " + strings.TrimSpace(string(b))
	}
	return fmt.Errorf("get %s: status %d %s%s", target, resp.StatusCode, text, detail)
}

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// checkJSON accepts application/json and application/*+json, with any
// parameters (the controller adds profile=...). Anything else, typically
// text/html from a captive portal or a proxy, is an error.
func checkJSON(ct string) error {
	if ct == "" {
		return errors.New("no Content-Type; want application/json")
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return fmt.Errorf("content type %q: %w", ct, err)
	}
	if mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json") {
		return nil
	}
	return fmt.Errorf("content type %q is not JSON (a captive portal or proxy?); want application/json", ct)
}

// bodyTooLargeError is a response body over the limit.
type bodyTooLargeError struct{ limit int64 }

func (e *bodyTooLargeError) Error() string {
	return fmt.Sprintf("response body exceeds the limit of %d bytes (MaxBodyBytes)", e.limit)
}

// readLimited reads r in full, failing once it passes limit bytes. It
// never buffers more than limit+1 bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, &bodyTooLargeError{limit}
	}
	return buf.Bytes(), nil
}

// checkRetry is retryablehttp's default policy (retry connection errors,
// 429 and 5xx; stop on context cancellation) except that permanent errors
// are never retried.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	var perm *permanentError
	if errors.As(err, &perm) {
		return false, err
	}
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

// jitterBackoff is retryablehttp's exponential backoff (which honours
// Retry-After on 429 and 503) with "equal jitter": a random wait between
// half the exponential step and the step, so that many nodes polling one
// registry after an outage do not retry in lockstep.
func jitterBackoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	d := retryablehttp.DefaultBackoff(min, max, attempt, resp)
	if resp != nil && resp.Header.Get("Retry-After") != "" {
		return d
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}

// stallConn fails a read or write that makes no progress for timeout, so
// that a hung server or a stalled body fails the attempt (and is retried)
// instead of blocking forever, while a large, slow but moving transfer is
// never cut off.
type stallConn struct {
	net.Conn
	timeout time.Duration
}

func (c *stallConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *stallConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// leveledLogger adapts slog to retryablehttp. A failed attempt is a
// warning, not an error: the caller decides, and logs, whether the fetch
// as a whole failed.
type leveledLogger struct{ l *slog.Logger }

func (l leveledLogger) Error(msg string, kv ...any) { l.l.Warn("registry: "+msg, kv...) }
func (l leveledLogger) Warn(msg string, kv ...any)  { l.l.Warn("registry: "+msg, kv...) }
func (l leveledLogger) Info(msg string, kv ...any)  { l.l.Debug("registry: "+msg, kv...) }
func (l leveledLogger) Debug(msg string, kv ...any) { l.l.Debug("registry: "+msg, kv...) }

var _ retryablehttp.LeveledLogger = leveledLogger{}

// parseLinks parses RFC 8288 Link header values ("<url>; rel=\"a b\", ...")
// into a map from relation to absolute URL, resolving relative URLs
// against base. The first link of a relation wins.
func parseLinks(base *url.URL, values []string) map[string]string {
	links := map[string]string{}
	for _, v := range values {
		for len(v) > 0 {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				// Not a link: skip to the next comma.
				if i := strings.IndexByte(v, ','); i >= 0 {
					v = v[i+1:]
					continue
				}
				break
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				break
			}
			target := v[1:end]
			v = v[end+1:]
			// Parameters up to the next comma outside quotes.
			var params string
			inQuote := false
			i := 0
			for ; i < len(v); i++ {
				if v[i] == '"' {
					inQuote = !inQuote
				}
				if v[i] == ',' && !inQuote {
					break
				}
			}
			params, v = v[:i], v[i:]
			u, err := base.Parse(target)
			if err != nil {
				continue
			}
			for _, p := range strings.Split(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
					continue
				}
				val = strings.Trim(strings.TrimSpace(val), "\"")
				for _, rel := range strings.Fields(val) {
					if _, dup := links[rel]; !dup {
						links[rel] = u.String()
					}
				}
			}
		}
	}
	return links
}
