// Bad: @grpc/grpc-js outside shared/grpc (house/sdk-in-adapter).
import { credentials } from '@grpc/grpc-js';
export const insecure = credentials.createInsecure;
