// The console's sections and its hash routes.

export const SECTIONS = [
  ['home', 'Home'], ['functions', 'Functions'], ['deployments', 'Deployments'],
  ['schedules', 'Schedules'], ['logs', 'Logs'], ['settings', 'Settings'],
];

// '#functions/abc?x=1' -> {page: 'functions', arg: 'abc', params: URLSearchParams}
export function parseRoute(hash) {
  const [path, q] = (hash || '').replace(/^#\/?/, '').split('?');
  const [page, ...rest] = path.split('/');
  const known = SECTIONS.some(([id]) => id === page);
  return { page: known ? page : 'home', arg: known ? decodeURIComponent(rest.join('/')) : '',
           params: new URLSearchParams(q || '') };
}
