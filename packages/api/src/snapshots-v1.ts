// containerd.services.snapshots.v1: the Snapshots service and its messages.
export * from "./gen/containerd/services/snapshots/v1/snapshots_pb.js";
