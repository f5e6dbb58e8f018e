/** The engines: profiles loaded from templates/<engine>/, rendered into ProcessSpecs by a pure renderer. */
export * from './types.js';
export * from './loader.js';
export * from './render.js';
export * from './template.js';
