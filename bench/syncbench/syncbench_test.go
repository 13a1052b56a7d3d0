package syncbench

import (
	"runtime"
	"testing"

	"github.com/statemesh/statemesh/deltas"
)

// BenchmarkRunOne runs a shortened gmap-30 experiment on the partial mesh
// (30 events instead of 100) in every mode: the joins, intervals and byte
// counting that dominate `statemesh bench sync`, in a few seconds. Compare
// before and after a change with -count 6 and benchstat.
func BenchmarkRunOne(b *testing.B) {
	o := DefaultOptions()
	o.Events = 30
	for _, m := range deltas.Modes {
		b.Run(m.String(), func(b *testing.B) {
			b.ReportAllocs()
			// RunOne reads its thread's CPU time.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var r Result
			cpu := 0.0
			for b.Loop() {
				var err error
				if r, err = RunOne(o, "gmap-30", "partial-mesh", m); err != nil {
					b.Fatal(err)
				}
				cpu += r.CPUMs
			}
			// CPU time of the run's thread: on a shared machine it varies
			// less than ns/op.
			b.ReportMetric(cpu/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(r.Bytes), "wire-B")
		})
	}
}
