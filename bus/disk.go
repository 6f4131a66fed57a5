package bus

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The disk outbox (OutboxConfig.Dir) keeps a copy of the outbox in a directory, so
// that a node process that is killed or crashes sends, when it starts again on the
// same directory, what it had accepted and the broker had not taken yet.
//
// Layout of the directory:
//
//	LOCK                  held (flock) by the running process
//	meta.json             {"version":1,"node_id":…,"partitions":S,"inboxes":I,"generation":G}
//	                      S shared partitions and I inbox partitions (see
//	                      Inboxer); a file without "inboxes" has none
//	g<G>-<index>.log      segments of the log of generation G (one per process
//	                      start); <index> is the position of its first record
//	g<G>.done             8 bytes: how many records of generation G, from the
//	                      first, left the outbox (published or dropped)
//
// A record is: uint32 length, uint32 CRC-32C of the data, data (the encoded data
// envelope, with its origin, instance, partition, seq and accept time), all
// big-endian. Records are appended in outbox order, under the outbox lock, with
// one write(2) each: a record Publish accepted is in the kernel's page cache when
// Publish returns, so it survives the process being killed; the fsync policy
// (OutboxConfig.Fsync) says what survives a crash of the host.
//
// Since the outbox always loses a prefix (the sender commits in order; drops take
// the oldest), "the first N records are done" describes it exactly. The done
// counter is written without fsync: a stale one only makes the next start publish
// again messages that receivers then drop as duplicates (same origin, instance
// and seq).
//
// At start, the records of earlier generations that are not done are loaded into
// the outbox in order and written to the new generation's log before the old
// files are removed. They keep their instance and seq, so receivers apply each
// exactly once; the new process publishes its own messages under a new instance
// after them.

// FsyncPolicy says when the disk outbox forces its writes to stable storage.
type FsyncPolicy int

const (
	// FsyncInterval (the default) syncs once a second, like Redis's appendfsync
	// everysec: a killed process loses nothing it accepted; a host crash loses at
	// most about the last second.
	FsyncInterval FsyncPolicy = iota
	// FsyncAlways makes Publish return only after its record is on stable
	// storage (concurrent Publish calls share one fsync).
	FsyncAlways
	// FsyncNever leaves it to the operating system: a killed process loses
	// nothing, a host crash may lose more.
	FsyncNever
)

func (p FsyncPolicy) String() string {
	switch p {
	case FsyncInterval:
		return "interval"
	case FsyncAlways:
		return "always"
	case FsyncNever:
		return "never"
	}
	return fmt.Sprintf("FsyncPolicy(%d)", int(p))
}

// ParseFsyncPolicy parses "interval", "always" or "never".
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	for _, p := range []FsyncPolicy{FsyncInterval, FsyncAlways, FsyncNever} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: fsync policy %q (want interval, always or never)", ErrInvalidConfig, s)
}

// ErrDisk is wrapped by the errors of Publish when the disk outbox could not
// write (the message was not accepted) and by New when it cannot use its
// directory.
var ErrDisk = errors.New("bus: disk outbox")

const (
	diskMetaVersion = 1
	diskSegmentSize = 8 << 20 // a new segment starts past this size
	diskSyncEvery   = time.Second
	diskRecordHead  = 8
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type diskMeta struct {
	Version int    `json:"version"`
	NodeID  string `json:"node_id"`
	// Partitions is the number of shared partitions (all of them without
	// inboxes, and in files written before inboxes), Inboxes the number of
	// inbox partitions after them.
	Partitions int    `json:"partitions"`
	Inboxes    int    `json:"inboxes,omitempty"`
	Generation uint64 `json:"generation"`
}

type diskSegment struct {
	first uint64 // index of its first record
	n     uint64 // records in it
	name  string
}

// diskLog is the open disk outbox of one process. append, advance and close run
// under the outbox lock; sync runs on its own.
type diskLog struct {
	dir    string
	gen    uint64
	policy FsyncPolicy
	lock   *os.File

	mu      sync.Mutex    // the files and counters below; taken under the outbox lock
	segs    []diskSegment // the segments of this generation still on disk
	cur     *os.File
	curSize int64
	next    uint64 // index of the next record
	done    uint64 // records that left the outbox
	doneF   *os.File
	buf     []byte
	broken  error // a write left the log unusable

	syncMu   sync.Mutex
	syncCond *sync.Cond
	synced   uint64 // records on stable storage
	syncing  bool
	syncErr  error
	stop     chan struct{}
	stopped  chan struct{}
}

// loadedRecord is a record of an earlier generation still to be published.
type loadedRecord struct {
	data []byte
	env  envelope
}

// openDisk opens (creating it if needed) the disk outbox in dir for nodeID (empty:
// adopt the directory's node id, or the generated one for a new directory) and
// returns the log of the new generation with the records of earlier generations
// that were not done, in order. shared and inboxes are the transport's shared
// and inbox partitions: a record names its partition by number, so a
// directory written with another number of shared partitions is refused, and
// one written with another number of inboxes too when it still holds a
// record for an inbox partition (the same number would be another node's
// inbox now); without such a record the inboxes may change.
func openDisk(dir, nodeID string, shared, inboxes int, policy FsyncPolicy) (*diskLog, string, []loadedRecord, error) {
	fail := func(err error) (*diskLog, string, []loadedRecord, error) {
		return nil, "", nil, fmt.Errorf("%w: %s: %w", ErrDisk, dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	lock, err := lockDir(filepath.Join(dir, "LOCK"))
	if err != nil {
		return fail(err)
	}
	d := &diskLog{dir: dir, policy: policy, lock: lock, stop: make(chan struct{}), stopped: make(chan struct{})}
	d.syncCond = sync.NewCond(&d.syncMu)
	ok := false
	defer func() {
		if !ok {
			d.closeFiles()
		}
	}()
	meta, err := readMeta(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if nodeID == "" {
			nodeID = newNodeID()
		}
		meta = diskMeta{Version: diskMetaVersion, NodeID: nodeID, Partitions: shared, Inboxes: inboxes}
	case err != nil:
		return fail(err)
	case meta.Version != diskMetaVersion:
		return fail(fmt.Errorf("meta.json version %d, want %d", meta.Version, diskMetaVersion))
	case nodeID != "" && meta.NodeID != nodeID:
		return fail(fmt.Errorf("the directory belongs to node %q, not %q (one directory per node id)", meta.NodeID, nodeID))
	case meta.Partitions != shared:
		return fail(fmt.Errorf("the directory was written with %d shared partitions (and %d inboxes), the transport has %d (and %d inboxes): its messages would go to other partitions",
			meta.Partitions, meta.Inboxes, shared, inboxes))
	}
	if meta.NodeID == "" {
		return fail(errors.New("no node id"))
	}
	old, err := d.loadOld(meta.Generation)
	if err != nil {
		return fail(err)
	}
	if meta.Inboxes != inboxes {
		n := 0
		for _, r := range old {
			if r.env.Partition >= shared {
				n++
			}
		}
		if n > 0 {
			return fail(fmt.Errorf("the directory was written with %d inboxes and holds %d messages for inbox partitions, the transport has %d inboxes: they would reach other nodes",
				meta.Inboxes, n, inboxes))
		}
		meta.Inboxes = inboxes
	}
	meta.Generation++
	d.gen = meta.Generation
	if err := writeMeta(dir, meta); err != nil {
		return fail(err)
	}
	if d.doneF, err = os.OpenFile(d.donePath(d.gen), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
		return fail(err)
	}
	if err := d.startSegment(); err != nil {
		return fail(err)
	}
	// The records still to publish go first into the new log, made durable,
	// before the old generations' files go.
	for _, r := range old {
		if _, err := d.append(r.data); err != nil {
			return fail(err)
		}
	}
	if err := d.syncCurrent(); err != nil {
		return fail(err)
	}
	if err := d.removeGenerations(d.gen); err != nil {
		return fail(err)
	}
	if policy == FsyncInterval {
		go d.syncLoop()
	} else {
		close(d.stopped)
	}
	ok = true
	return d, meta.NodeID, old, nil
}

func (d *diskLog) donePath(gen uint64) string {
	return filepath.Join(d.dir, "g"+strconv.FormatUint(gen, 10)+".done")
}

func readMeta(dir string) (diskMeta, error) {
	var m diskMeta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("meta.json: %w", err)
	}
	return m, nil
}

// writeMeta replaces meta.json atomically and durably.
func writeMeta(dir string, m diskMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "meta.json.tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "meta.json")); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// segmentFile is a segment found in the directory.
type segmentFile struct {
	gen, first uint64
	name       string
}

// segmentFiles lists the segments of the directory by generation and first index.
func (d *diskLog) segmentFiles() ([]segmentFile, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, err
	}
	var out []segmentFile
	for _, e := range entries {
		if g, first, ok := parseSegmentName(e.Name()); ok {
			out = append(out, segmentFile{g, first, e.Name()})
		}
	}
	slices.SortFunc(out, func(a, b segmentFile) int {
		if c := cmp.Compare(a.gen, b.gen); c != 0 {
			return c
		}
		return cmp.Compare(a.first, b.first)
	})
	return out, nil
}

func segmentName(gen, first uint64) string {
	return fmt.Sprintf("g%d-%020d.log", gen, first)
}

func parseSegmentName(name string) (gen, first uint64, ok bool) {
	rest, found := strings.CutPrefix(name, "g")
	if !found {
		return 0, 0, false
	}
	rest, found = strings.CutSuffix(rest, ".log")
	if !found {
		return 0, 0, false
	}
	gs, fs, found := strings.Cut(rest, "-")
	if !found {
		return 0, 0, false
	}
	g, err1 := strconv.ParseUint(gs, 10, 64)
	f, err2 := strconv.ParseUint(fs, 10, 64)
	return g, f, err1 == nil && err2 == nil
}

// loadOld reads the records of generations up to last that are not done. A torn
// record at the end of a segment (a crash in the middle of a write) ends it.
func (d *diskLog) loadOld(last uint64) ([]loadedRecord, error) {
	files, err := d.segmentFiles()
	if err != nil {
		return nil, err
	}
	var out []loadedRecord
	doneOf := map[uint64]uint64{}
	for _, f := range files {
		if f.gen > last {
			return nil, fmt.Errorf("segment %s of a generation after %d in meta.json", f.name, last)
		}
		done, seen := doneOf[f.gen]
		if !seen {
			done, err = readDone(d.donePath(f.gen))
			if err != nil {
				return nil, err
			}
			doneOf[f.gen] = done
		}
		b, err := os.ReadFile(filepath.Join(d.dir, f.name))
		if err != nil {
			return nil, err
		}
		idx := f.first
		for _, data := range diskRecords(b) {
			if idx >= done {
				env, err := decodeEnvelope(data, nil)
				if err != nil || env.Kind != kindData {
					return nil, fmt.Errorf("segment %s record %d: not a data envelope: %v", f.name, idx, err)
				}
				out = append(out, loadedRecord{data: slices.Clone(data), env: env})
			}
			idx++
		}
	}
	return out, nil
}

// diskRecords splits a segment into the data of its records, up to the first
// record that is cut short or fails its checksum (a crash in the middle of a
// write, or damage): nothing after it is trusted.
func diskRecords(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= diskRecordHead {
		n := binary.BigEndian.Uint32(b)
		sum := binary.BigEndian.Uint32(b[4:])
		if uint64(n) > uint64(len(b)-diskRecordHead) {
			break
		}
		data := b[diskRecordHead : diskRecordHead+int(n)]
		if crc32.Checksum(data, crcTable) != sum {
			break
		}
		out = append(out, data)
		b = b[diskRecordHead+int(n):]
	}
	return out
}

func readDone(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) < 8 {
		return 0, nil
	}
	return binary.BigEndian.Uint64(b), nil
}

// removeGenerations removes the files of the generations before keep.
func (d *diskLog) removeGenerations(keep uint64) error {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		var gen uint64
		if g, _, ok := parseSegmentName(name); ok {
			gen = g
		} else if s, ok := strings.CutSuffix(strings.TrimPrefix(name, "g"), ".done"); ok && strings.HasPrefix(name, "g") {
			g, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				continue
			}
			gen = g
		} else {
			continue
		}
		if gen < keep {
			if err := os.Remove(filepath.Join(d.dir, name)); err != nil {
				return err
			}
		}
	}
	return syncDir(d.dir)
}

func (d *diskLog) startSegment() error {
	name := segmentName(d.gen, d.next)
	f, err := os.OpenFile(filepath.Join(d.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	d.cur, d.curSize = f, 0
	d.segs = append(d.segs, diskSegment{first: d.next, name: name})
	return nil
}

// append writes one record and returns its position (for syncThrough).
func (d *diskLog) append(data []byte) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.broken != nil {
		return 0, d.broken
	}
	if d.curSize >= diskSegmentSize {
		// The finished segment is synced before the next one starts, so that
		// a crash never keeps a later segment and loses an earlier one.
		if err := d.syncCurrent(); err != nil {
			return 0, err
		}
		if err := d.cur.Close(); err != nil {
			return 0, err
		}
		if err := d.startSegment(); err != nil {
			d.broken = err
			return 0, err
		}
	}
	d.buf = d.buf[:0]
	d.buf = binary.BigEndian.AppendUint32(d.buf, uint32(len(data)))
	d.buf = binary.BigEndian.AppendUint32(d.buf, crc32.Checksum(data, crcTable))
	d.buf = append(d.buf, data...)
	if _, err := d.cur.Write(d.buf); err != nil {
		// A partial record would hide every later one at the next start.
		if terr := d.cur.Truncate(d.curSize); terr != nil {
			d.broken = fmt.Errorf("%w (and could not cut the partial record: %v)", err, terr)
		}
		return 0, err
	}
	d.curSize += int64(len(d.buf))
	d.segs[len(d.segs)-1].n++
	d.next++
	return d.next, nil
}

// advance records that n more records left the outbox, and removes the segments
// all of whose records did. It runs under the outbox lock.
func (d *diskLog) advance(n int) error {
	if n == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done += uint64(n)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], d.done)
	if _, err := d.doneF.WriteAt(b[:], 0); err != nil {
		return err
	}
	for len(d.segs) > 1 && d.segs[0].first+d.segs[0].n <= d.done {
		if err := os.Remove(filepath.Join(d.dir, d.segs[0].name)); err != nil {
			return err
		}
		d.segs = d.segs[1:]
	}
	return nil
}

// syncCurrent forces the current segment to stable storage. d.mu is held.
func (d *diskLog) syncCurrent() error {
	if err := d.cur.Sync(); err != nil {
		return err
	}
	d.syncMu.Lock()
	d.synced = max(d.synced, d.next)
	d.syncCond.Broadcast()
	d.syncMu.Unlock()
	return nil
}

// syncThrough returns once the first n records are on stable storage, sharing
// one fsync between concurrent callers.
func (d *diskLog) syncThrough(n uint64) error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	for d.synced < n {
		if d.syncErr != nil {
			return d.syncErr
		}
		if d.syncing {
			d.syncCond.Wait()
			continue
		}
		d.syncing = true
		d.syncMu.Unlock()
		d.mu.Lock()
		f, target := d.cur, d.next
		d.mu.Unlock()
		err := f.Sync()
		d.syncMu.Lock()
		d.syncing = false
		switch {
		case err == nil, errors.Is(err, os.ErrClosed):
			// Closed: a segment change or Close synced it first.
			d.synced = max(d.synced, target)
		default:
			d.syncErr = err
		}
		d.syncCond.Broadcast()
	}
	return nil
}

// syncLoop is FsyncInterval's background fsync.
func (d *diskLog) syncLoop() {
	defer close(d.stopped)
	t := time.NewTicker(diskSyncEvery)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		d.mu.Lock()
		n := d.next
		d.mu.Unlock()
		if err := d.syncThrough(n); err != nil {
			return // Publish reports it
		}
	}
}

// close stops the sync loop, syncs and closes the files. The records still in
// the log stay for the next start.
func (d *diskLog) close() error {
	close(d.stop)
	<-d.stopped
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.cur.Sync()
	d.closeFiles()
	return err
}

func (d *diskLog) closeFiles() {
	if d.cur != nil {
		d.cur.Close()
	}
	if d.doneF != nil {
		d.doneF.Close()
	}
	if d.lock != nil {
		unlockDir(d.lock)
		d.lock.Close()
	}
}
