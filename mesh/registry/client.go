package registry

import (
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
	"strconv"
	"strings"
	"sync"
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
	DefaultMaxBodyBytes = 128 << 20
	DefaultMaxPages     = 100000
	DefaultFetchTimeout = 15 * time.Minute
	DefaultUserAgent    = "mgmtnet"
)

// ErrBadURI is wrapped by the errors of New about the registry's base URI,
// so that callers can tell a usage error from others (a CA file that does
// not load, conflicting options).
var ErrBadURI = errors.New("bad registry base URI")

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
	// body is read. It does not bound the whole transfer (FetchTimeout
	// does). Default DefaultTimeout, and never more than FetchTimeout.
	Timeout time.Duration
	// Retries is how many times a request is retried after a connection
	// error, a stalled body, a 429 or a 5xx, with exponential backoff and
	// jitter between RetryWaitMin and RetryWaitMax. 4xx are not retried.
	// Default DefaultRetries; negative means none.
	Retries int
	// RetryWaitMin and RetryWaitMax bound the backoff between retries.
	// Defaults DefaultRetryWaitMin and DefaultRetryWaitMax.
	RetryWaitMin, RetryWaitMax time.Duration
	// MaxBodyBytes limits the JSON bytes one Fetch reads, counted after
	// any gzip Content-Encoding is undone: every response together (the
	// base resource, every page of every collection), so that a paginated
	// answer cannot carry more than an unpaginated one could, and a small
	// gzip answer cannot expand without bound. Bodies are decoded as they
	// stream in, never buffered whole, so a Fetch's memory is what the
	// members decode to, not the size of the answers. More is an error
	// that names the answer and the limit.
	//
	// Default DefaultMaxBodyBytes (128 MiB): 65 520 nodes, 1 000 hosts
	// and 10 servers as "mgmtnet registry serve" renders them with
	// 2048-bit keys are 47 MB, so the default leaves room for members 2.8
	// times as large (4096-bit keys, the many fields a real controller
	// adds) in a testbed of the largest size the plan allows.
	MaxBodyBytes int64
	// MaxPages limits how many list pages one Fetch reads, over all
	// collections; more is an error (a registry that paginates forever).
	// Default DefaultMaxPages.
	MaxPages int
	// FetchTimeout bounds one whole Fetch: every request, retry, backoff
	// wait and body read, so that a registry that drips its answer a
	// byte at a time cannot hold a Fetch longer. Timeout still bounds
	// each stall within it; the caller's context may end a Fetch sooner.
	// Zero or negative means DefaultFetchTimeout: a Fetch is never
	// unbounded.
	FetchTimeout time.Duration
	// Logger receives debug logs of requests and warnings about failed
	// attempts. Nil discards.
	Logger *slog.Logger
	// UserAgent is sent with every request. Default DefaultUserAgent.
	UserAgent string
	// Feed makes Fetch look for the registry's change feed (RelChanges)
	// and, where the base links one, ask its version before it reads the
	// collections: Snapshot.Feed and FeedVersion, for Changes to follow.
	Feed bool
	// Progress, if set, is called after each page of a member collection
	// with the collection's URL and the number of members read from it so
	// far.
	Progress func(collection string, members int)
}

// Client reads a CONFINE registry. It is safe for concurrent use.
//
// It follows redirects and Link targets to other hosts (controllers mix
// their IP address and name), logging each change of host once, but never
// from https to anything else: a controller behind a TLS-terminating proxy
// may render http:// URIs, and following them would fetch tinc keys in
// clear text, past the pinned CA.
type Client struct {
	base *url.URL
	opts Options
	log  *slog.Logger
	http *retryablehttp.Client

	mu        sync.Mutex
	hostMoves map[[2]string]bool // (from, to) host changes logged
}

// New returns a client of the registry whose base resource is baseURI
// (e.g. "https://[fdf5:5351:1dfd::2]/api/"). The URI must be absolute http
// or https; a missing final slash is added, as the controller's
// collections are relative to the base.
func New(baseURI string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURI)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadURI, baseURI, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w %q: want an absolute http:// or https:// URI", ErrBadURI, baseURI)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w %q: no host", ErrBadURI, baseURI)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w %q: credentials in the URI are not supported (reads are anonymous)", ErrBadURI, baseURI)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.Fragment = ""
	if opts.Insecure && opts.CAFile != "" {
		return nil, errors.New("registry options: Options.Insecure and Options.CAFile exclude each other")
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
	if opts.MaxPages <= 0 {
		opts.MaxPages = DefaultMaxPages
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	opts.Timeout = min(opts.Timeout, opts.FetchTimeout)
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
	c := &Client{base: u, opts: opts, log: log, hostMoves: map[[2]string]bool{}}
	c.http = &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport:     transport,
			CheckRedirect: c.checkRedirect,
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
	return c, nil
}

// maxRedirects is the standard library's limit.
const maxRedirects = 10

// checkRedirect is the http.Client's redirect policy: at most maxRedirects,
// and never from https to http (see follow). Its errors are permanent:
// retrying would meet the same redirect.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return &permanentError{fmt.Errorf("get %s: stopped after %d redirects", via[0].URL, maxRedirects)}
	}
	if err := c.follow("redirect", via[len(via)-1].URL, req.URL); err != nil {
		return &permanentError{fmt.Errorf("get %s: %w", via[0].URL, err)}
	}
	return nil
}

// follow checks a step from one URL to another, by a redirect or a Link
// target (how names it): a step from https to another scheme is an error;
// a change of host is allowed and logged, once per pair of hosts.
func (c *Client) follow(how string, from, to *url.URL) error {
	if from.Scheme == "https" && to.Scheme != "https" {
		return fmt.Errorf("refusing to follow %s from %s: https to %s downgrade", to, from, to.Scheme)
	}
	if strings.EqualFold(from.Host, to.Host) {
		return nil
	}
	key := [2]string{strings.ToLower(from.Host), strings.ToLower(to.Host)}
	c.mu.Lock()
	logged := c.hostMoves[key]
	c.hostMoves[key] = true
	c.mu.Unlock()
	if !logged {
		c.log.Info("registry continues on another host", "via", how, "from", from.String(), "to", to.String())
	}
	return nil
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
	// in the registry's order. Nil when NotModified, and with FetchInto
	// (its sink took them).
	Candidates []mesh.Candidate
	// Problems are list elements that could not even be decoded. Callers
	// report them as rejected, next to mesh.Build's rejections.
	Problems []mesh.Problem
	// NotModified reports that every member collection answered 304 to
	// the validators given: nothing changed, Candidates is nil.
	NotModified bool
	// Validators maps each member collection's URL to its validator of
	// this fetch, to persist and pass to the next Fetch: the ETag as the
	// registry sent it, or for a collection the registry paginated the
	// ETags of all its pages (a page's ETag vouches only for that page).
	// A collection that came without an ETag has none and is read in full
	// every time. The values are opaque.
	Validators map[string]string
	// Dialect is DialectV0 when the base used the pre-2015 relations or
	// any member had the pre-2015 mgmt_net shape, else DialectV1.
	Dialect string
	// Feed is the URL of the registry's change feed, with Options.Feed
	// where the base links one ("" otherwise), and FeedVersion the
	// feed's version before the collections were read: Changes from it
	// gives whatever changed since (and perhaps some of what this
	// snapshot holds already).
	Feed        string
	FeedVersion uint64
}

// collection is one member collection to fetch.
type collection struct {
	kind addressing.Kind
	rel  string // "server-list"...
	url  string
	// single marks a singleton resource, one object rather than a list:
	// the server of controllers v0.10 to v0.11.1.
	single bool
}

// fetchState is what one Fetch has used of its limits.
type fetchState struct {
	read  int64 // body bytes read, of MaxBodyBytes
	pages int   // list pages read, of MaxPages
}

// fetchTimeoutError ends a Fetch that takes longer than FetchTimeout. It
// is a context.DeadlineExceeded.
type fetchTimeoutError struct{ d time.Duration }

func (e *fetchTimeoutError) Error() string {
	return fmt.Sprintf("timeout: the whole fetch took longer than its deadline of %v", e.d)
}
func (e *fetchTimeoutError) Unwrap() error { return context.DeadlineExceeded }

// Fetch reads the base resource and every member collection (servers,
// hosts, nodes), following pagination. validators, if not nil, maps
// collection URLs to ETags of an earlier fetch: when every collection is
// unchanged the result is NotModified; when only some are, the unchanged
// ones are fetched again in full so that Candidates is always complete.
//
// One Fetch reads at most MaxBodyBytes and MaxPages list pages, and ends
// after FetchTimeout.
//
// Fetch holds every candidate until it returns; FetchInto hands them to a
// Sink (a mesh.Builder) as they are decoded instead.
func (c *Client) Fetch(ctx context.Context, validators map[string]string) (*Snapshot, error) {
	return c.fetch(ctx, validators, nil)
}

// Sink takes the candidates of FetchInto as they are decoded. A
// *mesh.Builder is one.
type Sink interface {
	// Add takes one candidate; it may keep what c points to.
	Add(c *mesh.Candidate)
	// Checkpoint marks the state that Rollback returns to.
	Checkpoint()
	// Rollback forgets every candidate added since the last Checkpoint:
	// a page whose transfer failed half-way is read again in full.
	Rollback()
}

var _ Sink = (*mesh.Builder)(nil)

// FetchInto is Fetch, but each candidate goes to sink as soon as it is
// decoded, and the Snapshot's Candidates is nil: no more than one element
// of the registry's answer is held at a time, so the caller's memory
// follows what sink keeps (a mesh.Builder keeps the validated members),
// not the answer.
//
// The candidates come collection by collection, each in the registry's
// order; a collection that answered 304 while another changed comes after
// the changed ones. A NotModified snapshot added nothing to sink. When
// FetchInto fails, sink holds part of an answer and should be dropped.
func (c *Client) FetchInto(ctx context.Context, validators map[string]string, sink Sink) (*Snapshot, error) {
	if sink == nil {
		return nil, errors.New("registry fetch: nil sink")
	}
	return c.fetch(ctx, validators, sink)
}

// fetch is Fetch with a nil sink, else FetchInto.
func (c *Client) fetch(ctx context.Context, validators map[string]string, sink Sink) (*Snapshot, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.FetchTimeout, &fetchTimeoutError{c.opts.FetchTimeout})
	defer cancel()
	st := &fetchState{}
	baseURL := c.base.String()
	var base baseObject
	page, err := c.get(ctx, st, baseURL, "", func(r *limitedBody) error {
		base = baseObject{}
		return decodeBase(baseURL, r, &base)
	})
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Dialect: DialectV1, Validators: map[string]string{}}
	if s := strings.TrimSpace(base.TestbedParams.MgmtIPv6Prefix); s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			c.log.Warn("registry gives an unparsable management prefix; ignoring it", "url", baseURL, "mgmt_ipv6_prefix", s, "err", err)
		} else {
			snap.Prefix = p
		}
	}
	cols, v0, err := c.discover(page)
	if err != nil {
		return nil, err
	}
	if v0 {
		snap.Dialect = DialectV0
	}
	c.log.Debug("registry collections", "base", baseURL, "collections", cols, "dialect", snap.Dialect)
	if c.opts.Feed {
		if feed, ok := parseLinks(page.url, page.header.Values("Link"))[RelChanges]; ok {
			if err := c.follow("Link rel="+RelChanges, page.url, feed); err != nil {
				return nil, fmt.Errorf("registry base %s: %w", baseURL, err)
			}
			// Asked before the collections: what changes while they are
			// read comes again from the feed.
			v, err := c.FeedVersion(ctx, feed.String())
			if err != nil {
				c.log.Warn("registry links a change feed that does not answer; polling instead", "feed", feed.String(), "err", err)
			} else {
				snap.Feed, snap.FeedVersion = feed.String(), v
			}
		}
	}

	results := make([]*collectionResult, len(cols))
	allNotModified := true
	for i, col := range cols {
		res, err := c.fetchCollection(ctx, st, col, validators[col.url], sink)
		if err != nil {
			return nil, err
		}
		results[i] = res
		if !res.notModified {
			allNotModified = false
		}
	}
	if allNotModified {
		// The feed's version was read first: what the 304s confirm is
		// at least that version.
		snap.NotModified = true
		for _, col := range cols {
			snap.Validators[col.url] = validators[col.url]
		}
		return snap, nil
	}
	n := 0
	for i, col := range cols {
		if results[i].notModified {
			c.log.Debug("collection unchanged but others changed; fetching it again in full", "url", col.url)
			res, err := c.fetchCollection(ctx, st, col, "", sink)
			if err != nil {
				return nil, err
			}
			results[i] = res
		}
		n += len(results[i].Candidates)
	}
	if sink == nil {
		snap.Candidates = make([]mesh.Candidate, 0, n)
	}
	for i, col := range cols {
		d := &results[i].decoded
		if sink == nil {
			snap.Candidates = append(snap.Candidates, d.Candidates...)
		}
		snap.Problems = append(snap.Problems, d.Problems...)
		if d.V0 {
			snap.Dialect = DialectV0
		}
		if results[i].validator != "" {
			snap.Validators[col.url] = results[i].validator
		}
	}
	return snap, nil
}

// discover finds the member collections in the base's Link header: the
// registry relations, else the pre-2015 server relations (v0 reports
// that), else the fixed paths relative to the base. A Link target must
// pass follow.
//
// Controllers v0.10 to v0.11.1 had no server list: they linked the one
// server as a singleton (rel server/server, at /api/server/) and the
// other gateways as their own collection (rel server/gateway-list, at
// /api/gateways/, members gateway_<id>). Where the base links those and
// no server list, they are read instead. (From v0.11.2 the base links
// both a server list and, for old clients, the singleton, and gateways/
// is an empty stub: the list is read.)
func (c *Client) discover(base *page) (cols []collection, v0 bool, err error) {
	links := parseLinks(base.url, base.header.Values("Link"))
	rel := func(name string) (*url.URL, bool) {
		if u, ok := links[relPrefixV1+name]; ok {
			return u, true
		}
		if u, ok := links[relPrefixV0+name]; ok {
			v0 = true
			return u, true
		}
		return nil, false
	}
	fixed := func(path string) *url.URL { return base.url.ResolveReference(&url.URL{Path: path}) }
	var servers []collection
	if u, ok := rel("server-list"); ok {
		servers = []collection{{kind: addressing.KindServer, rel: "server-list", url: u.String()}}
	} else if u, ok := links[relPrefixV0+"server"]; ok {
		v0 = true
		servers = []collection{{kind: addressing.KindServer, rel: "server", url: u.String(), single: true}}
		g, ok := links[relPrefixV0+"gateway-list"]
		if !ok {
			g = fixed("gateways/")
		}
		servers = append(servers, collection{kind: addressing.KindGateway, rel: "gateway-list", url: g.String()})
	} else {
		servers = []collection{{kind: addressing.KindServer, rel: "server-list", url: fixed("servers/").String()}}
	}
	cols = servers
	for _, m := range []struct {
		kind addressing.Kind
		rel  string
		path string
	}{{addressing.KindHost, "host-list", "hosts/"}, {addressing.KindNode, "node-list", "nodes/"}} {
		u, ok := rel(m.rel)
		if !ok {
			u = fixed(m.path)
		}
		cols = append(cols, collection{kind: m.kind, rel: m.rel, url: u.String()})
	}
	for _, col := range cols {
		target, _ := url.Parse(col.url)
		if err := c.follow("Link rel="+col.rel, base.url, target); err != nil {
			return nil, false, fmt.Errorf("registry base %s: %w", base.url, err)
		}
	}
	return cols, v0, nil
}

// collectionResult is one collection read in full, or a 304.
type collectionResult struct {
	decoded
	validator   string // to pass to the next Fetch (see pageValidators)
	notModified bool
}

// pageValidator is what a paginated collection's validator records of
// one page: its URL as followed, its ETag, and the elements on it.
type pageValidator struct {
	URL     string `json:"url"`
	ETag    string `json:"etag"`
	Members int    `json:"members"`
}

// pageValidators is the validator of a paginated collection: a JSON array
// of its pages' pageValidator, in order. An ETag covers one page's body,
// so an unchanged collection is one whose every page is unchanged
// (pagesValidated). The validator of an unpaginated collection is its ETag
// as the registry sent it. Callers treat validators as opaque strings.
func pageValidators(pages []pageValidator) string {
	b, err := json.Marshal(pages)
	if err != nil {
		return ""
	}
	return string(b)
}

// parsePageValidators decodes a paginated collection's validator; ok is
// false for a plain ETag (or anything else that is not one).
func parsePageValidators(v string) (pages []pageValidator, ok bool) {
	if !strings.HasPrefix(v, "[") {
		return nil, false
	}
	if err := json.Unmarshal([]byte(v), &pages); err != nil || len(pages) == 0 {
		return nil, false
	}
	for _, p := range pages {
		if p.URL == "" || p.ETag == "" {
			return nil, false
		}
	}
	return pages, true
}

// IfNoneMatch returns the If-None-Match value that revalidates an ETag the
// registry sent, the way the field's own clients do it:
//
//   - The 2015 controller runs Django 1.6's GZipMiddleware ahead of
//     CommonMiddleware, so on the way out CommonMiddleware first tags the
//     uncompressed body ("<md5>") and compares If-None-Match with it as a
//     whole string, and GZipMiddleware then sends a compressed answer's
//     tag as "<md5>;gzip". Sent back as is, that tag never matches. The
//     node firmware's client keeps what comes before the first ";" and
//     quotes it again; so does this.
//   - A weak tag (W/"x", as nginx makes of a strong tag when it
//     compresses) is sent as its opaque part, "x", quoted: If-None-Match
//     compares weakly (RFC 9110 §13.1.2), so any server that honours W/
//     matches it, and one that compares strings, like Django 1.6 behind
//     such a proxy, matches only that form.
//
// A tag that is not quoted is sent as it came.
func IfNoneMatch(etag string) string {
	t := strings.TrimSpace(etag)
	t = strings.TrimPrefix(t, "W/")
	if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' {
		return strings.TrimSpace(etag)
	}
	opaque := t[1 : len(t)-1]
	if i := strings.IndexByte(opaque, ';'); i >= 0 {
		opaque = opaque[:i]
	}
	return `"` + opaque + `"`
}

// pagesValidated reports whether a paginated collection is unchanged
// since its validator (pageValidators): one conditional GET per page. A
// page's ETag covers only its body, and on the controller not its Link
// header, so a full last page could have grown a next page that no 304
// would show: that page is read in full and its Link header checked. The
// first page that changed ends the check; the caller then reads the
// collection again, so a change costs at most one page more.
func (c *Client) pagesValidated(ctx context.Context, st *fetchState, col collection, pages []pageValidator) (bool, error) {
	if pages[0].URL != col.url {
		return false, nil // the base moved the collection
	}
	for i, pv := range pages {
		st.pages++
		if st.pages > c.opts.MaxPages {
			return false, fmt.Errorf("get %s: more than %d list pages in one fetch (MaxPages)", pv.URL, c.opts.MaxPages)
		}
		last := i == len(pages)-1
		full := last && (len(pages) == 1 || pv.Members >= pages[0].Members)
		inm := pv.ETag
		if full {
			inm = ""
		}
		p, err := c.get(ctx, st, pv.URL, inm, discardBody)
		if err != nil {
			if ctx.Err() != nil {
				return false, err
			}
			// A page that is gone (a registry that answers 404 past
			// the last page, once the collection shrank) or any other
			// failure: read the collection again, which reports an
			// error that persists.
			c.log.Debug("revalidating a page failed; reading the collection again", "url", pv.URL, "err", err)
			return false, nil
		}
		if p.notModified {
			continue
		}
		if !full || p.header.Get("ETag") != pv.ETag {
			return false, nil
		}
		if _, more := parseLinks(p.url, p.header.Values("Link"))["next"]; more {
			return false, nil
		}
	}
	return true, nil
}

// discardBody reads a body that revalidation does not need: a 200 to a
// conditional GET means a change, which a full fetch reads again.
func discardBody(r *limitedBody) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// fetchCollection reads and decodes every page of a collection, unless
// validator (of an earlier fetch) shows it unchanged: then the result is
// notModified. An unpaginated collection's validator makes its one request
// conditional; a paginated one's is checked page by page first
// (pagesValidated). The validator it returns is the response's ETag for
// an unpaginated collection, the pages' (pageValidators) for a paginated
// one, and "" when a page had no ETag. With a sink the candidates go to
// it, else to the result.
func (c *Client) fetchCollection(ctx context.Context, st *fetchState, col collection, validator string, sink Sink) (*collectionResult, error) {
	if pages, ok := parsePageValidators(validator); ok {
		same, err := c.pagesValidated(ctx, st, col, pages)
		if err != nil {
			return nil, err
		}
		if same {
			return &collectionResult{validator: validator, notModified: true}, nil
		}
		validator = ""
	}
	md := newMemberDecoder(col.kind, col.url, c.log)
	md.sink = sink
	decode := decodeList
	if col.single {
		// The singleton server has no id: it is the main server.
		decode, md.defaultID = decodeObject, addressing.MainServerID
	}
	res := &collectionResult{}
	seen := map[string]bool{}
	var pages []pageValidator
	tagged := true
	next := col.url
	for next != "" {
		if seen[next] {
			return nil, fmt.Errorf("get %s: pagination loops back to %s", col.url, next)
		}
		seen[next] = true
		st.pages++
		if st.pages > c.opts.MaxPages {
			return nil, fmt.Errorf("get %s: more than %d list pages in one fetch (MaxPages)", next, c.opts.MaxPages)
		}
		pageURL := next
		before := md.n
		inm := ""
		if len(pages) == 0 {
			inm = validator
		}
		p, err := c.get(ctx, st, pageURL, inm, func(r *limitedBody) error {
			// An attempt that fails half-way leaves nothing behind for
			// the retry to meet as duplicates.
			mark := md.mark()
			if err := decode(pageURL, r, md.add); err != nil {
				md.rollback(mark)
				return err
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if p.notModified {
			// Only the first page carries a validator: get fails any
			// other 304.
			return &collectionResult{validator: validator, notModified: true}, nil
		}
		etag := p.header.Get("ETag")
		if etag == "" {
			tagged = false
		}
		pages = append(pages, pageValidator{URL: pageURL, ETag: etag, Members: md.n - before})
		if c.opts.Progress != nil {
			c.opts.Progress(col.url, md.members())
		}
		target, ok := parseLinks(p.url, p.header.Values("Link"))["next"]
		if !ok {
			break
		}
		if err := c.follow("Link rel=next", p.url, target); err != nil {
			return nil, fmt.Errorf("pagination of %s: %w", col.url, err)
		}
		next = target.String()
	}
	// A collection on one page is validated by its ETag alone. The
	// controller sends "first" and "last" links on every list, paginated
	// or not, and puts a whole collection on one page unless asked for
	// per_page, so one page is the usual case; only a registry that
	// paginates unasked, and whose collection fills exactly one page,
	// could grow a second page that the first page's 304 does not show,
	// until the first page changes too.
	switch {
	case !tagged:
	case len(pages) > 1:
		res.validator = pageValidators(pages)
	default:
		res.validator = pages[0].ETag
	}
	res.decoded = md.decoded
	return res, nil
}

// page is one successful response, its body decoded.
type page struct {
	url         *url.URL // after redirects
	header      http.Header
	bytes       int64 // body bytes read (unzipped)
	notModified bool
}

// permanentError is a failure that retrying cannot fix (a 4xx, a wrong
// content type, a body over the limit, a refused redirect).
type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// get fetches one URL with retries and streams its body into decode,
// within what is left of MaxBodyBytes, which it charges to st. decode must
// consume the body up to its end and leave no trace when it fails: a body
// that fails mid-transfer is retried, and decode runs again on the new
// attempt. An error of decode that is not the transfer's (bad JSON, the
// limit) is not retried. A 304 is an answer only to a request with
// ifNoneMatch; decode does not run then.
func (c *Client) get(ctx context.Context, st *fetchState, target, ifNoneMatch string, decode func(*limitedBody) error) (*page, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", target, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", IfNoneMatch(ifNoneMatch))
	}
	var got *page
	// checkRetry records each failed attempt's error, to name it when the
	// fetch's deadline ends a backoff wait.
	last := &lastAttempt{}
	req = req.WithContext(context.WithValue(ctx, lastAttemptKey{}, last))
	// The body is read inside the retry loop, so that a transfer that
	// breaks or stalls is retried like a failed connection. retryablehttp
	// drains and closes the body before a retry; get closes it after
	// success.
	answered := false // some attempt got response headers
	req.SetResponseHandler(func(resp *http.Response) error {
		answered = true
		switch {
		case resp.StatusCode == http.StatusNotModified && ifNoneMatch == "":
			// Without a validator a 304 says nothing: taking it for
			// "unchanged" would keep stale keys forever.
			return &permanentError{fmt.Errorf("get %s: status 304 Not Modified to a request without If-None-Match (a broken proxy or cache?)", target)}
		case resp.StatusCode == http.StatusNotModified:
			got = &page{url: resp.Request.URL, header: resp.Header, notModified: true}
			return nil
		case resp.StatusCode < 200 || resp.StatusCode > 299:
			return &permanentError{statusError(target, resp)}
		}
		if err := checkJSON(resp.Header.Get("Content-Type")); err != nil {
			return &permanentError{fmt.Errorf("get %s: %w", target, err)}
		}
		body := newLimitedBody(resp.Body, target, c.opts.MaxBodyBytes, st.read)
		// A Content-Length is of the bytes on the wire: it can refuse a
		// body at once, but only the bytes read (unzipped) can pass it.
		if !resp.Uncompressed && resp.ContentLength > body.left {
			return &permanentError{body.tooBig()}
		}
		if err := decode(body); err != nil {
			var tooBig *bodyTooLargeError
			var elemTooBig *elementTooLargeError
			switch {
			case errors.As(err, &tooBig):
				return &permanentError{tooBig}
			case errors.As(err, &elemTooBig):
				return &permanentError{err}
			case body.err != nil:
				// The transfer failed (a reset, a stall): retry.
				return fmt.Errorf("get %s: read body: %w", target, body.err)
			}
			return &permanentError{err}
		}
		got = &page{url: resp.Request.URL, header: resp.Header, bytes: body.n}
		return nil
	})
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		var perm *permanentError
		switch {
		case errors.As(err, &perm):
			return nil, perm.err
		case ctx.Err() != nil && last.err != nil && !errors.Is(last.err, context.Canceled) && !errors.Is(last.err, context.DeadlineExceeded):
			return nil, fmt.Errorf("get %s: %w (the last attempt: %w)", target, context.Cause(ctx), last.err)
		case ctx.Err() != nil && !answered:
			return nil, fmt.Errorf("get %s: %w, without an answer", target, context.Cause(ctx))
		case ctx.Err() != nil:
			return nil, fmt.Errorf("get %s: %w", target, context.Cause(ctx))
		}
		return nil, fmt.Errorf("get %s: %w", target, err)
	}
	defer resp.Body.Close()
	if got == nil {
		// Retries exhausted on a retryable status: the handler never ran.
		return nil, fmt.Errorf("%w (after %d attempts)", statusError(target, resp), c.opts.Retries+1)
	}
	st.read += got.bytes
	c.log.Debug("registry get", "url", target, "status", resp.StatusCode, "bytes", got.bytes, "took", time.Since(start))
	return got, nil
}

// statusError describes an unwanted status, with a short excerpt of the
// body when it is text (a JSON error from the controller says why), quoted:
// it is the registry's, and must not put lines or escape codes on a
// terminal.
func statusError(target string, resp *http.Response) error {
	text := http.StatusText(resp.StatusCode)
	var detail string
	if b, _ := io.ReadAll(io.LimitReader(resp.Body, 200)); len(b) > 0 && isPrintable(b) {
		detail = ": " + strconv.Quote(strings.TrimSpace(string(b)))
	}
	return &statusErr{code: resp.StatusCode, msg: fmt.Sprintf("get %s: status %d %s%s", target, resp.StatusCode, text, detail)}
}

// statusErr is an unwanted status.
type statusErr struct {
	code int
	msg  string
}

func (e *statusErr) Error() string { return e.msg }

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

// bodyTooLargeError is a response body over what is left of the limit of
// one fetch.
type bodyTooLargeError struct {
	url           string
	limit, before int64
}

func (e *bodyTooLargeError) Error() string {
	msg := fmt.Sprintf("registry answer from %s exceeds %s unzipped (MaxBodyBytes)", e.url, formatBytes(e.limit))
	if e.before > 0 {
		msg += fmt.Sprintf(" for all answers of one fetch, %d bytes of them read before it", e.before)
	}
	return msg
}

// formatBytes writes n in MiB or KiB when it is a whole number of them.
func formatBytes(n int64) string {
	switch {
	case n > 0 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n > 0 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// limitedBody reads a response body (already unzipped by the transport when
// it came gzipped) and fails with a *bodyTooLargeError, rather than end
// early, once more than left bytes would be read. It remembers the first
// error of the underlying read (err), to tell a broken transfer from
// undecodable bytes.
type limitedBody struct {
	r             io.Reader
	url           string
	limit, before int64
	left          int64 // limit - before, at least 0
	n             int64 // bytes returned so far
	err           error // first read error other than io.EOF
	over          bool
}

func newLimitedBody(r io.Reader, url string, limit, before int64) *limitedBody {
	return &limitedBody{r: r, url: url, limit: limit, before: before, left: max(limit-before, 0)}
}

func (b *limitedBody) tooBig() *bodyTooLargeError {
	return &bodyTooLargeError{url: b.url, limit: b.limit, before: b.before}
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, b.tooBig()
	}
	// One byte past the limit tells a body of exactly left bytes from a
	// longer one.
	if room := b.left + 1 - b.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := b.r.Read(p)
	if b.n+int64(n) > b.left {
		b.over = true
		n = int(b.left - b.n)
		b.n = b.left
		return n, b.tooBig()
	}
	b.n += int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// lastAttempt is the error of a request's last failed attempt, which
// checkRetry records when the request's context has one under
// lastAttemptKey.
type lastAttempt struct{ err error }

type lastAttemptKey struct{}

// checkRetry is retryablehttp's default policy (retry connection errors,
// 429 and 5xx; stop on context cancellation) except that permanent errors
// are never retried.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if last, ok := ctx.Value(lastAttemptKey{}).(*lastAttempt); ok {
		switch {
		case err != nil:
			e := err
			var ue *url.Error
			if errors.As(e, &ue) {
				e = ue.Err // get names the URL
			}
			last.err = e
		case resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500):
			// A status that will be retried: name it if the fetch's
			// deadline ends the retries.
			last.err = fmt.Errorf("status %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		}
	}
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

// leveledLogger adapts slog to retryablehttp. A failed attempt is only
// debug information: the caller reports, once, whether the fetch as a whole
// failed (a node at first boot expects the registry to be unreachable).
type leveledLogger struct{ l *slog.Logger }

func (l leveledLogger) Error(msg string, kv ...any) { l.l.Debug("registry: "+msg, kv...) }
func (l leveledLogger) Warn(msg string, kv ...any)  { l.l.Debug("registry: "+msg, kv...) }
func (l leveledLogger) Info(msg string, kv ...any)  { l.l.Debug("registry: "+msg, kv...) }
func (l leveledLogger) Debug(msg string, kv ...any) { l.l.Debug("registry: "+msg, kv...) }

var _ retryablehttp.LeveledLogger = leveledLogger{}

// parseLinks parses RFC 8288 Link header values ("<url>; rel=\"a b\", ...")
// into a map from relation to absolute URL, resolving relative URLs
// against base. The first link of a relation wins.
func parseLinks(base *url.URL, values []string) map[string]*url.URL {
	links := map[string]*url.URL{}
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
						links[rel] = u
					}
				}
			}
		}
	}
	return links
}

// Enrol registers a member's public key with a one-time invite: POST
// <base>/<nodes|hosts>/<id>/ctl/enrol/ with {"token", "pubkey"}, over the
// client's TLS settings (the pinned CA of a node). collection is "nodes"
// or "hosts". It is not retried: an invite is spent by the first answer
// that takes it. A refusal gives the registry's reason ("the invite token
// was used already").
func (c *Client) Enrol(ctx context.Context, collection string, id uint64, token, pubkey string) error {
	_, _, err := c.enrol(ctx, collection+"/"+strconv.FormatUint(id, 10)+"/ctl/enrol/", token, pubkey)
	return err
}

// EnrolInvite registers a public key with a one-time invite for the member
// of collection ("hosts", "nodes") that the invite was made for (POST
// <base>ctl/enrol/, a registry database's; an invite for another
// collection is refused and stays unspent): it returns the member's id.
func (c *Client) EnrolInvite(ctx context.Context, collection, token, pubkey string) (id uint64, err error) {
	_, id, err = c.enrol(ctx, "ctl/enrol/", token, pubkey, collection)
	return id, err
}

func (c *Client) enrol(ctx context.Context, path, token, pubkey string, collection ...string) (string, uint64, error) {
	target := c.base.ResolveReference(&url.URL{Path: path})
	req := map[string]string{"token": token, "pubkey": pubkey}
	if len(collection) > 0 {
		req["collection"] = collection[0]
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "", 0, fmt.Errorf("enrol: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(string(body)))
	if err != nil {
		return "", 0, fmt.Errorf("enrol: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", c.opts.UserAgent)
	resp, err := c.http.HTTPClient.Do(hreq)
	if err != nil {
		return "", 0, fmt.Errorf("enrol at %s: %w", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		var ans struct {
			Collection string `json:"collection"`
			ID         uint64 `json:"id"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ans); err != nil {
			return "", 0, fmt.Errorf("enrol at %s: the answer: %w", target, err)
		}
		return ans.Collection, ans.ID, nil
	}
	var d struct {
		Detail string `json:"detail"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	detail := http.StatusText(resp.StatusCode)
	if json.Unmarshal(b, &d) == nil && d.Detail != "" && isPrintable([]byte(d.Detail)) {
		detail = d.Detail
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return "", 0, &EnrolRefused{URL: target.String(), Status: resp.StatusCode, Detail: detail}
	}
	return "", 0, fmt.Errorf("enrol at %s: status %d: %s", target, resp.StatusCode, detail)
}

// EnrolRefused is Enrol's error when the registry answered and refused:
// an unknown, spent or expired invite (403), a key it rejects (400), no
// such member (404). Detail is the registry's reason.
type EnrolRefused struct {
	URL    string
	Status int
	Detail string
}

func (e *EnrolRefused) Error() string {
	return fmt.Sprintf("enrol at %s: status %d: %s", e.URL, e.Status, e.Detail)
}
