// Command inethost is the virtual testbed's pretend Internet host: an HTTP
// server on a documentation address that tells each client the address it
// sees it coming from (GET /) and serves any number of bytes
// (GET /bytes/N), for the egress tests and the demo. The kernel of its
// namespace answers ICMP. It serves the same on every address of -listen
// (comma-separated), e.g. also on the attack targets behind the WAN.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func main() {
	listen := flag.String("listen", ":80", "addresses to serve HTTP on, comma-separated")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s\n", host)
	})
	mux.HandleFunc("/bytes/", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/bytes/"), 10, 64)
		if err != nil || n < 0 || n > 1<<30 {
			http.Error(w, "want /bytes/N with N up to 1 GiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.CopyN(w, zeros{}, n)
	})
	addrs := strings.Split(*listen, ",")
	errs := make(chan error, len(addrs))
	for _, a := range addrs {
		srv := &http.Server{Addr: a, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- srv.ListenAndServe() }()
	}
	log.Fatal(<-errs)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
