module github.com/confine-project/mgmtnet

go 1.26.8

require (
	github.com/google/go-cmp v0.7.0
	github.com/hashicorp/go-retryablehttp v0.7.8
	golang.org/x/sys v0.49.0
)

require github.com/hashicorp/go-cleanhttp v0.5.2 // indirect
