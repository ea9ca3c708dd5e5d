// containerd.services.streaming.v1: the Streaming service (Any in, Any out) and StreamInit.
export * from "./gen/containerd/services/streaming/v1/streaming_pb.js";
