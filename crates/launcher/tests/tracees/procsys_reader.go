// A multi-threaded Go tracee for the launcher tests. Go programs run several OS threads from
// the start; here 8 goroutines, each locked to its own OS thread, read /proc/sys files at the
// same time with os.ReadFile (openat) and os.Stat (newfstatat), then the program execs a copy
// of itself (os/exec: clone(CLONE_VM|CLONE_VFORK) + execve) that reads them too, and writes one.
//
// Output lines: "<who> <how> <file> <content>" as in procsys_reader.c.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
)

var files = []string{"kernel/pid_max", "kernel/panic_on_oops", "kernel/keys/root_maxkeys"}

func describe(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "ERR:" + errnoName(errno)
	}
	return "ERR:" + err.Error()
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EACCES:
		return "EACCES"
	default:
		return fmt.Sprintf("errno%d", int(e))
	}
}

func read(who string, file string) string {
	path := "/proc/sys/" + file
	if _, err := os.Stat(path); err != nil {
		return fmt.Sprintf("%s stat-then-read %s %s\n", who, file, describe(err))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("%s stat-then-read %s %s\n", who, file, describe(err))
	}
	return fmt.Sprintf("%s stat-then-read %s %s\n", who, file, strings.SplitN(string(data), "\n", 2)[0])
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exec-child" {
		for _, f := range files {
			os.Stdout.WriteString(read("exec-child", f))
		}
		return
	}
	runtime.GOMAXPROCS(4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	threads := map[int]bool{}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			mu.Lock()
			threads[syscall.Gettid()] = true
			mu.Unlock()
			for _, f := range files {
				os.Stdout.WriteString(read("thread", f))
			}
		}()
	}
	wg.Wait()
	fmt.Printf("distinct-threads %d\n", len(threads))

	child := exec.Command("/proc/self/exe", "exec-child")
	child.Stdout = os.Stdout
	child.Stderr = os.Stderr
	if err := child.Run(); err != nil {
		fmt.Printf("exec-child failed: %v\n", err)
		os.Exit(2)
	}

	if err := os.WriteFile("/proc/sys/kernel/panic", []byte("7\n"), 0o644); err != nil {
		fmt.Printf("write kernel/panic %s\n", describe(err))
		os.Exit(3)
	}
	fmt.Println("write kernel/panic ok")
}
