// containerd.services.images.v1: the Images service and its messages.
export * from "./gen/containerd/services/images/v1/images_pb.js";
