package bench

// Committed like the dataplane's objects, so that `go build` needs no clang.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror $BPF_CFLAGS" -target amd64,arm64 benchbpf ../../bpf/bench.c -- -I../../bpf
