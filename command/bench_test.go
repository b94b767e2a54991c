package command_test

import (
	"testing"

	"github.com/recado-dev/recado/command/commandtest"
)

// The benchmarks of docs/benchmarks.md, one sub-benchmark per backend. Run
// BenchmarkAppendConcurrent in the same run: the command figures are judged
// against it.
//
//	go test -run '^$' -bench . ./command/

func BenchmarkAccept(b *testing.B) {
	b.Run("Memory", func(b *testing.B) { commandtest.BenchAccept(b, memoryBackend) })
	b.Run("SQLite", func(b *testing.B) { commandtest.BenchAccept(b, sqliteBackend) })
}

func BenchmarkCommandThroughput(b *testing.B) {
	b.Run("Memory", func(b *testing.B) { commandtest.BenchThroughput(b, memoryBackend) })
	b.Run("SQLite", func(b *testing.B) { commandtest.BenchThroughput(b, sqliteBackend) })
}

func BenchmarkAcceptHTTP(b *testing.B) {
	b.Run("Memory", func(b *testing.B) { commandtest.BenchAcceptHTTP(b, memoryBackend) })
	b.Run("SQLite", func(b *testing.B) { commandtest.BenchAcceptHTTP(b, sqliteBackend) })
}

func BenchmarkAppendConcurrent(b *testing.B) {
	b.Run("Memory", func(b *testing.B) { commandtest.BenchAppend(b, memoryBackend) })
	b.Run("SQLite", func(b *testing.B) { commandtest.BenchAppend(b, sqliteBackend) })
}
