// runtime.v1: the Kubernetes CRI ImageService and the RuntimeService calls needed to run a pod.
export * from "./gen/cri/runtime/v1/api_pb.js";
