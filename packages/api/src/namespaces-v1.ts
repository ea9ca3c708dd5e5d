// containerd.services.namespaces.v1: the Namespaces service and its messages.
export * from "./gen/containerd/services/namespaces/v1/namespace_pb.js";
