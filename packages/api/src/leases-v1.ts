// containerd.services.leases.v1: the Leases service and its messages.
export * from "./gen/containerd/services/leases/v1/leases_pb.js";
