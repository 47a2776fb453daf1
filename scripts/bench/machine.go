package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machine describes where the figures were measured.
type machine struct {
	CPU        string
	Cores      int
	MemoryGiB  float64
	LoadAvg    string // 1, 5 and 15 minute load averages when the run started
	Kernel     string
	Go         string
	PostgreSQL string
}

func describeMachine() machine {
	m := machine{
		CPU:    procField("/proc/cpuinfo", "model name"),
		Cores:  runtime.NumCPU(),
		Kernel: readTrimmed("/proc/sys/kernel/osrelease"),
		Go:     fmt.Sprintf("%s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH),
	}
	if load := strings.Fields(readTrimmed("/proc/loadavg")); len(load) >= 3 {
		m.LoadAvg = strings.Join(load[:3], " ")
	}
	if kb, err := strconv.ParseFloat(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 64); err == nil {
		m.MemoryGiB = kb / (1 << 20)
	}
	if m.CPU == "" {
		m.CPU = "unknown"
	}
	return m
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// procField returns the value of the first "name: value" line of a /proc file.
func procField(path, name string) string {
	for line := range strings.Lines(readTrimmed(path)) {
		key, value, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(key) == name {
			return strings.TrimSpace(value)
		}
	}
	return ""
}
