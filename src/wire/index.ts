export * from './constants.js';
export * from './errors.js';
export * from './framer.js';
export * from './header.js';
export * from './opmsg.js';
export * from './opquery.js';
export * from './compression.js';
export * from './bson-bytes.js';
export { crc32c } from './crc32c.js';
