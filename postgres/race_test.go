//go:build race

package postgres

// raceEnabled: the race detector makes the tests that move a gigabyte
// through memory too slow to run.
const raceEnabled = true
