export * from './admin.js';
export * from './defaults.js';
export * from './errors.js';
export * from './frames.js';
export * from './names.js';
export * from './permissions.js';
export * from './units.js';
