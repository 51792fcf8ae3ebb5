// Streams, events, stream capture and CUDA graphs of the emulated runtime.
//
// The emulator runs every kernel and copy synchronously, so outside a capture a stream is only a
// validated handle and an event a host timestamp. Stream capture is real: while a stream captures,
// the work submitted to it (kernel launches, asynchronous copies and memsets, cuBLASLt GEMMs,
// external event records and waits, graph launches) is not run but recorded as graph nodes, with
// their dependencies: the stream's previous node, and across streams the nodes an event carried
// (cudaEventRecord in a capturing stream, cudaStreamWaitEvent in another one, which joins that
// stream to the capture). cudaStreamEndCapture returns the graph; cudaGraphInstantiate and
// cudaGraphLaunch replay the recorded work in capture order (a topological order, since every node
// was recorded after its dependencies).
//
// Capture rejects what real CUDA rejects, with its error codes, and invalidates the capture the
// way the CUDA programming guide describes ("when an invalid operation is attempted during stream
// capture, any associated capture graphs are invalidated"; later work on the capture's streams
// returns cudaErrorStreamCaptureInvalidated and cudaStreamEndCapture returns a null graph):
//   * cudaStreamSynchronize / cudaStreamQuery of a capturing stream, and cudaDeviceSynchronize
//     while any stream captures: cudaErrorStreamCaptureUnsupported;
//   * potentially unsafe calls (cudaMalloc, cudaFree, pinned host allocations, synchronous
//     cudaMemcpy / cudaMemset) from a thread whose capture mode forbids them
//     (cudaThreadExchangeStreamCaptureMode; global mode by default): cudaErrorStreamCaptureUnsupported;
//   * the legacy stream (stream 0, synchronous copies) while a blocking stream captures:
//     cudaErrorStreamCaptureImplicit;
//   * cudaEventQuery / cudaEventSynchronize / cudaEventElapsedTime of an event last recorded in a
//     capture: cudaErrorCapturedEvent;
//   * a capturing stream waiting on an event recorded outside the capture (without
//     cudaEventWaitExternal): cudaErrorStreamCaptureIsolation; on an event of another capture:
//     cudaErrorStreamCaptureMerge;
//   * cudaStreamEndCapture on a stream that joined but did not begin the capture:
//     cudaErrorStreamCaptureUnmatched; from another thread (non-relaxed mode):
//     cudaErrorStreamCaptureWrongThread; with a forked stream whose work the origin stream never
//     waited for: cudaErrorStreamCaptureUnjoined.
// Beyond real CUDA, cudaMallocAsync / cudaFreeAsync inside a capture (graph memory nodes) are not
// emulated and fail with cudaErrorStreamCaptureUnsupported.
#if defined(COCO_CUDA_EMULATED) || defined(EMU_STANDALONE)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "engine/simt/cuda_emu.h"
#include "engine/simt/emu_internal.h"

namespace emu::detail {
namespace {

struct Capture;
struct Graph;

struct Node {
  cudaGraphNodeType type;
  std::vector<Node*> dependencies;
  std::function<void()> work;
};

struct Graph {
  std::vector<std::unique_ptr<Node>> nodes;  // in capture order
};

struct EmuStream {
  unsigned flags = 0;
  int priority = 0;
  Capture* capture = nullptr;
  std::vector<Node*> tail;  // what the next node captured in this stream depends on
  // cudaStreamGetCaptureInfo's arrays (valid until the next call on the stream)
  std::vector<cudaGraphNode_t> info_nodes;
  std::vector<cudaGraphEdgeData> info_edges;
  bool blocking() const { return (flags & cudaStreamNonBlocking) == 0; }
};

struct EmuEvent {
  unsigned flags = 0;
  bool recorded = false;
  std::chrono::steady_clock::time_point time;
  bool captured = false;       // last recorded inside a capture sequence
  Capture* capture = nullptr;  // that capture, while it is in progress
  std::vector<Node*> nodes;    // the capturing stream's tail when it was recorded
};

struct Capture {
  unsigned long long id = 0;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;
  EmuStream* origin = nullptr;
  std::unique_ptr<Graph> graph;
  bool invalidated = false;
  std::vector<EmuStream*> streams;  // the origin, then the streams joined through events
  std::vector<EmuEvent*> events;    // recorded inside this capture
};

// An executable graph: the nodes' work in capture order, shared with launches in flight.
struct Exec {
  std::shared_ptr<const std::vector<std::function<void()>>> work;
};

struct State {
  std::mutex mutex;
  std::unordered_set<EmuStream*> streams;
  std::unordered_set<EmuEvent*> events;
  std::unordered_set<Graph*> graphs;  // graphs owned by the caller (ended captures, cudaGraphCreate)
  std::unordered_set<Exec*> execs;
  std::unordered_set<Capture*> captures;
  std::unordered_set<const Node*> nodes;
  unsigned long long next_capture_id = 1;
};
State& state() {
  static State* s = new State;  // never destroyed: static destructors may still release streams
  return *s;
}
std::atomic<int> g_live_captures{0};

thread_local EmuStream t_per_thread_stream;  // cudaStreamPerThread (blocking, like the legacy stream)
thread_local cudaStreamCaptureMode t_capture_mode = cudaStreamCaptureModeGlobal;

// The stream behind a handle: nullptr for the legacy stream; false for an unknown handle.
bool resolve(State& st, cudaStream_t stream, EmuStream** out) {
  *out = nullptr;
  if (stream == nullptr || stream == cudaStreamLegacy) return true;
  if (stream == cudaStreamPerThread) {
    *out = &t_per_thread_stream;
    return true;
  }
  auto* s = reinterpret_cast<EmuStream*>(stream);
  if (!st.streams.count(s)) return false;
  *out = s;
  return true;
}

EmuEvent* find_event(State& st, cudaEvent_t event) {
  auto* e = reinterpret_cast<EmuEvent*>(event);
  return st.events.count(e) ? e : nullptr;
}

// Captures that include a blocking stream: the legacy stream implicitly depends on them.
bool legacy_stream_conflicts(State& st, bool invalidate) {
  bool conflict = false;
  for (Capture* c : st.captures)
    for (EmuStream* s : c->streams)
      if (s->blocking()) {
        conflict = true;
        if (invalidate) c->invalidated = true;
        break;
      }
  return conflict;
}

void register_node(State& st, Graph& graph, std::unique_ptr<Node> node) {
  st.nodes.insert(node.get());
  graph.nodes.push_back(std::move(node));
}

void drop_graph(State& st, std::unique_ptr<Graph> graph) {
  for (const auto& node : graph->nodes) st.nodes.erase(node.get());
}

Node* add_node(State& st, EmuStream& s, cudaGraphNodeType type, std::function<void()> work) {
  auto node = std::make_unique<Node>();
  node->type = type;
  node->dependencies = s.tail;
  node->work = std::move(work);
  Node* raw = node.get();
  register_node(st, *s.capture->graph, std::move(node));
  s.tail = {raw};
  return raw;
}

// Where asynchronous work on `stream` goes; the lock is held.
cudaError_t classify(State& st, cudaStream_t stream, EmuStream** s, bool* capturing) {
  *capturing = false;
  if (!resolve(st, stream, s)) return cudaErrorInvalidResourceHandle;
  if (!*s) return legacy_stream_conflicts(st, true) ? cudaErrorStreamCaptureImplicit : cudaSuccess;
  if ((*s)->capture) {
    if ((*s)->capture->invalidated) return cudaErrorStreamCaptureInvalidated;
    *capturing = true;
  }
  return cudaSuccess;
}

// Potentially unsafe calls are refused while the calling thread's mode forbids them; the captures
// that forbid them are invalidated.
bool forbids_unsafe_calls(State& st) {
  bool forbidden = false;
  const std::thread::id self = std::this_thread::get_id();
  for (Capture* c : st.captures) {
    const bool own = c->thread == self && c->mode != cudaStreamCaptureModeRelaxed;
    const bool other =
        t_capture_mode == cudaStreamCaptureModeGlobal && c->thread != self && c->mode == cudaStreamCaptureModeGlobal;
    if (own || other) {
      c->invalidated = true;
      forbidden = true;
    }
  }
  return forbidden;
}

// Ends capture `c`: the streams leave capture mode and its events forget it. Returns the graph.
std::unique_ptr<Graph> finish(State& st, Capture* c) {
  for (EmuStream* s : c->streams) {
    s->capture = nullptr;
    s->tail.clear();
  }
  for (EmuEvent* e : c->events)
    if (st.events.count(e) && e->capture == c) e->capture = nullptr;
  std::unique_ptr<Graph> graph = std::move(c->graph);
  st.captures.erase(c);
  delete c;
  --g_live_captures;
  return graph;
}

// Every node that `tail` depends on, directly or not, and the tail itself.
std::unordered_set<const Node*> ancestors(const std::vector<Node*>& tail) {
  std::unordered_set<const Node*> seen;
  std::vector<const Node*> todo(tail.begin(), tail.end());
  while (!todo.empty()) {
    const Node* n = todo.back();
    todo.pop_back();
    if (!seen.insert(n).second) continue;
    for (const Node* d : n->dependencies) todo.push_back(d);
  }
  return seen;
}

// cudaEventQuery / cudaEventSynchronize: an event last recorded in a capture has no completion.
cudaError_t completed(cudaEvent_t event) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuEvent* e = find_event(st, event);
  if (!e) return record_error(cudaErrorInvalidResourceHandle);
  if (e->captured) {
    if (e->capture) e->capture->invalidated = true;
    return record_error(cudaErrorCapturedEvent);
  }
  return cudaSuccess;
}

// CUDA's convention for node arrays: with `out`, fills *count entries (null past the end, edge data
// zero) and leaves in *count how many are real; without it, sets *count to the number of nodes.
void copy_out(const std::vector<const Node*>& nodes, cudaGraphNode_t* out, cudaGraphEdgeData* edges, size_t* count) {
  if (!out) {
    *count = nodes.size();
    return;
  }
  for (size_t i = 0; i < *count; ++i) {
    out[i] = i < nodes.size() ? reinterpret_cast<cudaGraphNode_t>(const_cast<Node*>(nodes[i])) : nullptr;
    if (edges) edges[i] = cudaGraphEdgeData{};
  }
  *count = std::min(*count, nodes.size());
}

// A graph the caller may inspect: an ended capture's, a created one, or one still being captured.
Graph* find_graph(State& st, cudaGraph_t graph, bool include_capturing) {
  auto* g = reinterpret_cast<Graph*>(graph);
  if (st.graphs.count(g)) return g;
  if (include_capturing)
    for (Capture* c : st.captures)
      if (c->graph.get() == g) return g;
  return nullptr;
}

}  // namespace

cudaError_t stream_work(cudaStream_t stream, bool* capturing) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  State& st = state();
  if (g_live_captures.load(std::memory_order_relaxed) == 0 &&
      (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread)) {
    *capturing = false;
    return cudaSuccess;
  }
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  return classify(st, stream, &s, capturing);
}

cudaError_t record_node(cudaStream_t stream, cudaGraphNodeType type, std::function<void()> work) {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  bool capturing = false;
  if (cudaError_t status = classify(st, stream, &s, &capturing); status != cudaSuccess) return status;
  if (!capturing) return cudaErrorIllegalState;  // the capture ended between the two calls
  add_node(st, *s, type, std::move(work));
  return cudaSuccess;
}

cudaError_t submit(cudaStream_t stream, cudaGraphNodeType type, std::function<void()> work) {
  bool capturing = false;
  if (cudaError_t status = stream_work(stream, &capturing); status != cudaSuccess) return status;
  if (capturing) return record_node(stream, type, std::move(work));
  work();
  return cudaSuccess;
}

void invalidate_capture_of(cudaStream_t stream) {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  if (resolve(st, stream, &s) && s && s->capture) s->capture->invalidated = true;
}

cudaError_t check_unsafe_call() {
  if (t_capture_mode == cudaStreamCaptureModeRelaxed || g_live_captures.load(std::memory_order_relaxed) == 0)
    return cudaSuccess;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  return forbids_unsafe_calls(st) ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

cudaError_t check_synchronous_call() {
  if (g_live_captures.load(std::memory_order_relaxed) == 0) return cudaSuccess;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  if (t_capture_mode != cudaStreamCaptureModeRelaxed && forbids_unsafe_calls(st))
    return cudaErrorStreamCaptureUnsupported;
  return legacy_stream_conflicts(st, true) ? cudaErrorStreamCaptureImplicit : cudaSuccess;
}

}  // namespace emu::detail

using emu::detail::record_error;

extern "C" {

cudaError_t cudaDeviceSynchronize(void) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (g_live_captures.load(std::memory_order_relaxed) == 0) return cudaSuccess;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  // Synchronising the device would synchronise the capturing streams, which hold no real work.
  for (Capture* c : st.captures) c->invalidated = true;
  return record_error(st.captures.empty() ? cudaSuccess : cudaErrorStreamCaptureUnsupported);
}

// ------------------------------------------------------------------------------------------------
// Streams
cudaError_t cudaStreamCreate(cudaStream_t* pStream) { return cudaStreamCreateWithFlags(pStream, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (!pStream || (flags & ~cudaStreamNonBlocking)) return record_error(cudaErrorInvalidValue);
  auto* stream = new EmuStream();
  stream->flags = flags;
  *pStream = reinterpret_cast<cudaStream_t>(stream);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.streams.insert(stream);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* pStream, unsigned int flags, int priority) {
  const cudaError_t status = cudaStreamCreateWithFlags(pStream, flags);
  if (status == cudaSuccess) reinterpret_cast<emu::detail::EmuStream*>(*pStream)->priority = priority;
  return status;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  using namespace emu::detail;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  auto* s = reinterpret_cast<EmuStream*>(stream);
  if (!st.streams.count(s)) return record_error(cudaErrorInvalidResourceHandle);
  if (s->capture) {  // the capture would lose a stream it still records into
    s->capture->invalidated = true;
    return record_error(cudaErrorStreamCaptureUnsupported);
  }
  st.streams.erase(s);
  delete s;
  return emu::detail::sticky_failure();  // released, but a kernel fault stays reported
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (g_live_captures.load(std::memory_order_relaxed) == 0 &&
      (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread))
    return cudaSuccess;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  if (!resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  if (!s) return record_error(legacy_stream_conflicts(st, true) ? cudaErrorStreamCaptureImplicit : cudaSuccess);
  if (s->capture) {
    s->capture->invalidated = true;
    return record_error(cudaErrorStreamCaptureUnsupported);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) { return cudaStreamSynchronize(stream); }

cudaError_t cudaStreamGetFlags(cudaStream_t stream, unsigned int* flags) {
  using namespace emu::detail;
  if (!flags) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  if (!resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  *flags = s ? s->flags : cudaStreamDefault;
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------------
// Events: host timestamps taken when recorded (all earlier work has completed by then).
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (!event || (flags & ~(cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess)))
    return record_error(cudaErrorInvalidValue);
  auto* e = new EmuEvent();
  e->flags = flags;
  *event = reinterpret_cast<cudaEvent_t>(e);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.events.insert(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned int flags) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (flags & ~cudaEventRecordExternal) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuEvent* e = find_event(st, event);
  if (!e) return record_error(cudaErrorInvalidResourceHandle);
  EmuStream* s = nullptr;
  bool capturing = false;
  if (cudaError_t status = classify(st, stream, &s, &capturing); status != cudaSuccess) return record_error(status);
  if (capturing) {
    // An internal dependency of the capture; an external record also becomes a node that stamps
    // the event when the graph runs.
    if (flags & cudaEventRecordExternal)
      add_node(st, *s, cudaGraphNodeTypeEventRecord, [e] {
        State& state_now = state();
        std::lock_guard<std::mutex> relock(state_now.mutex);
        if (!state_now.events.count(e)) return;
        e->recorded = true;
        e->captured = false;
        e->time = std::chrono::steady_clock::now();
      });
    e->captured = true;
    e->capture = s->capture;
    e->nodes = s->tail;
    s->capture->events.push_back(e);
    return cudaSuccess;
  }
  e->recorded = true;
  e->captured = false;
  e->capture = nullptr;
  e->nodes.clear();
  e->time = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  return cudaEventRecordWithFlags(event, stream, 0);
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (flags & ~cudaEventWaitExternal) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuEvent* e = find_event(st, event);
  EmuStream* s = nullptr;
  if (!e || !resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  if (!s) {  // the legacy stream cannot take part in a capture
    if (e->capture) {
      e->capture->invalidated = true;
      return record_error(cudaErrorStreamCaptureImplicit);
    }
    return record_error(legacy_stream_conflicts(st, true) ? cudaErrorStreamCaptureImplicit : cudaSuccess);
  }
  if (s->capture && s->capture->invalidated) return record_error(cudaErrorStreamCaptureInvalidated);
  if (e->capture) {
    Capture* c = e->capture;
    if (!s->capture) {  // fork: the stream joins the capture, after the event's nodes
      s->capture = c;
      s->tail = e->nodes;
      c->streams.push_back(s);
      return cudaSuccess;
    }
    if (s->capture == c) {  // join: the next node also waits for the event's nodes
      for (Node* n : e->nodes)
        if (std::find(s->tail.begin(), s->tail.end(), n) == s->tail.end()) s->tail.push_back(n);
      return cudaSuccess;
    }
    c->invalidated = s->capture->invalidated = true;
    return record_error(cudaErrorStreamCaptureMerge);
  }
  if (s->capture) {
    if (flags & cudaEventWaitExternal) {
      add_node(st, *s, cudaGraphNodeTypeWaitEvent, [] {});  // replays in order: nothing to wait for
      return cudaSuccess;
    }
    s->capture->invalidated = true;  // a dependency on work outside the capture
    return record_error(cudaErrorStreamCaptureIsolation);
  }
  if (e->captured) return record_error(cudaErrorCapturedEvent);
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) { return emu::detail::completed(event); }
cudaError_t cudaEventQuery(cudaEvent_t event) { return emu::detail::completed(event); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (!ms) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  const EmuEvent* a = find_event(st, start);
  const EmuEvent* b = find_event(st, end);
  if (!a || !b || (a->flags & cudaEventDisableTiming) || (b->flags & cudaEventDisableTiming))
    return record_error(cudaErrorInvalidResourceHandle);
  if (a->captured || b->captured) return record_error(cudaErrorCapturedEvent);
  if (!a->recorded || !b->recorded) return record_error(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->time - a->time).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  using namespace emu::detail;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuEvent* e = find_event(st, event);
  if (!e) return record_error(cudaErrorInvalidResourceHandle);
  if (e->capture) std::erase(e->capture->events, e);
  st.events.erase(e);
  delete e;
  return emu::detail::sticky_failure();  // released, but a kernel fault stays reported
}

// ------------------------------------------------------------------------------------------------
// Stream capture
cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  if (!mode || (*mode != cudaStreamCaptureModeGlobal && *mode != cudaStreamCaptureModeThreadLocal &&
                *mode != cudaStreamCaptureModeRelaxed))
    return record_error(cudaErrorInvalidValue);
  std::swap(*mode, emu::detail::t_capture_mode);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  if (!resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  if (!s)
    return record_error(cudaErrorStreamCaptureUnsupported);  // "may not be initiated if stream is cudaStreamLegacy"
  if (s->capture) return record_error(cudaErrorIllegalState);
  auto* c = new Capture();
  c->id = st.next_capture_id++;
  c->mode = mode;
  c->thread = std::this_thread::get_id();
  c->origin = s;
  c->graph = std::make_unique<Graph>();
  c->streams.push_back(s);
  s->capture = c;
  s->tail.clear();
  st.captures.insert(c);
  ++g_live_captures;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  using namespace emu::detail;
  if (!pGraph) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  if (!resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  if (!s || !s->capture) return record_error(cudaErrorIllegalState);
  Capture* c = s->capture;
  if (c->origin != s) {
    c->invalidated = true;
    return record_error(cudaErrorStreamCaptureUnmatched);
  }
  if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id()) {
    c->invalidated = true;
    return record_error(cudaErrorStreamCaptureWrongThread);
  }
  *pGraph = nullptr;
  // Every forked stream's last work must be joined back into the origin stream.
  bool unjoined = false;
  if (!c->invalidated && c->streams.size() > 1) {
    const std::unordered_set<const Node*> joined = ancestors(s->tail);
    for (EmuStream* other : c->streams)
      for (const Node* n : other->tail)
        if (other != s && !joined.count(n)) unjoined = true;
  }
  const bool invalidated = c->invalidated;
  std::unique_ptr<Graph> graph = finish(st, c);
  if (invalidated || unjoined) {
    drop_graph(st, std::move(graph));
    return record_error(invalidated ? cudaErrorStreamCaptureInvalidated : cudaErrorStreamCaptureUnjoined);
  }
  Graph* raw = graph.release();
  st.graphs.insert(raw);
  *pGraph = reinterpret_cast<cudaGraph_t>(raw);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* pCaptureStatus) {
  using namespace emu::detail;
  if (!pCaptureStatus) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  if (!resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  // On the legacy stream: an error, but the blocking capture is not invalidated.
  if (!s && legacy_stream_conflicts(st, false)) return record_error(cudaErrorStreamCaptureImplicit);
  *pCaptureStatus = !s || !s->capture         ? cudaStreamCaptureStatusNone
                    : s->capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                              : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, enum cudaStreamCaptureStatus* captureStatus_out,
                                     unsigned long long* id_out, cudaGraph_t* graph_out,
                                     const cudaGraphNode_t** dependencies_out, const cudaGraphEdgeData** edgeData_out,
                                     size_t* numDependencies_out) {
  using namespace emu::detail;
  if (!captureStatus_out || (edgeData_out && !dependencies_out)) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  EmuStream* s = nullptr;
  if (!resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  if (!s && legacy_stream_conflicts(st, false)) return record_error(cudaErrorStreamCaptureImplicit);
  if (!s || !s->capture) {
    *captureStatus_out = cudaStreamCaptureStatusNone;
    return cudaSuccess;
  }
  Capture* c = s->capture;
  *captureStatus_out = c->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  if (c->invalidated) return cudaSuccess;
  if (id_out) *id_out = c->id;
  if (graph_out) *graph_out = reinterpret_cast<cudaGraph_t>(c->graph.get());
  s->info_nodes.assign(s->tail.size(), nullptr);
  for (size_t i = 0; i < s->tail.size(); ++i) s->info_nodes[i] = reinterpret_cast<cudaGraphNode_t>(s->tail[i]);
  s->info_edges.assign(s->tail.size(), cudaGraphEdgeData{});
  if (dependencies_out) *dependencies_out = s->info_nodes.data();
  if (edgeData_out) *edgeData_out = s->info_edges.data();
  if (numDependencies_out) *numDependencies_out = s->tail.size();
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------------
// Graphs
cudaError_t cudaGraphCreate(cudaGraph_t* pGraph, unsigned int flags) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  if (!pGraph || flags != 0) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  auto* g = new Graph();
  st.graphs.insert(g);
  *pGraph = reinterpret_cast<cudaGraph_t>(g);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  using namespace emu::detail;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  Graph* g = find_graph(st, graph, false);  // a graph being captured may not be destroyed
  if (!g) return record_error(cudaErrorInvalidValue);
  st.graphs.erase(g);
  drop_graph(st, std::unique_ptr<Graph>(g));
  return emu::detail::sticky_failure();  // released, but a kernel fault stays reported
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* numNodes) {
  using namespace emu::detail;
  if (!numNodes) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  const Graph* g = find_graph(st, graph, true);
  if (!g) return record_error(cudaErrorInvalidValue);
  std::vector<const Node*> all;
  for (const auto& node : g->nodes) all.push_back(node.get());
  copy_out(all, nodes, nullptr, numNodes);
  return cudaSuccess;
}

cudaError_t cudaGraphNodeGetType(cudaGraphNode_t node, enum cudaGraphNodeType* pType) {
  using namespace emu::detail;
  if (!pType) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  const auto* n = reinterpret_cast<const Node*>(node);
  if (!st.nodes.count(n)) return record_error(cudaErrorInvalidValue);
  *pType = n->type;
  return cudaSuccess;
}

cudaError_t cudaGraphNodeGetDependencies(cudaGraphNode_t node, cudaGraphNode_t* pDependencies,
                                         cudaGraphEdgeData* edgeData, size_t* pNumDependencies) {
  using namespace emu::detail;
  if (!pNumDependencies || (edgeData && !pDependencies)) return record_error(cudaErrorInvalidValue);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  const auto* n = reinterpret_cast<const Node*>(node);
  if (!st.nodes.count(n)) return record_error(cudaErrorInvalidValue);
  copy_out(std::vector<const Node*>(n->dependencies.begin(), n->dependencies.end()), pDependencies, edgeData,
           pNumDependencies);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  constexpr unsigned long long known = cudaGraphInstantiateFlagAutoFreeOnLaunch | cudaGraphInstantiateFlagUpload |
                                       cudaGraphInstantiateFlagDeviceLaunch | cudaGraphInstantiateFlagUseNodePriority;
  if (!pGraphExec || (flags & ~known)) return record_error(cudaErrorInvalidValue);
  if (flags & cudaGraphInstantiateFlagDeviceLaunch) return record_error(cudaErrorNotSupported);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  const Graph* g = find_graph(st, graph, false);
  if (!g) return record_error(cudaErrorInvalidValue);
  auto* exec = new Exec();
  auto work = std::make_shared<std::vector<std::function<void()>>>();
  work->reserve(g->nodes.size());
  for (const auto& node : g->nodes) work->push_back(node->work);
  exec->work = std::move(work);
  st.execs.insert(exec);
  *pGraphExec = reinterpret_cast<cudaGraphExec_t>(exec);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  std::shared_ptr<const std::vector<std::function<void()>>> work;
  {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    auto* exec = reinterpret_cast<Exec*>(graphExec);
    if (!st.execs.count(exec)) return record_error(cudaErrorInvalidValue);
    work = exec->work;  // shared: the executable graph may be destroyed while this launch runs
  }
  // Launched into a capture, the whole graph becomes one (child graph) node. A kernel of the graph
  // that faults fails the launch, as the next synchronisation would report it on a GPU.
  take_graph_kernel_status();
  const cudaError_t status = submit(stream, cudaGraphNodeTypeGraph, [work = std::move(work)] {
    for (const std::function<void()>& w : *work) w();
  });
  return record_error(status != cudaSuccess ? status : take_graph_kernel_status());
}

cudaError_t cudaGraphUpload(cudaGraphExec_t graphExec, cudaStream_t stream) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  using namespace emu::detail;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  if (!st.execs.count(reinterpret_cast<Exec*>(graphExec))) return record_error(cudaErrorInvalidValue);
  EmuStream* s = nullptr;
  if (!resolve(st, stream, &s)) return record_error(cudaErrorInvalidResourceHandle);
  return cudaSuccess;  // host memory: nothing to upload
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  using namespace emu::detail;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  auto* exec = reinterpret_cast<Exec*>(graphExec);
  if (!st.execs.erase(exec)) return record_error(cudaErrorInvalidValue);
  delete exec;
  return emu::detail::sticky_failure();  // released, but a kernel fault stays reported
}

}  // extern "C"

#endif  // COCO_CUDA_EMULATED || EMU_STANDALONE
