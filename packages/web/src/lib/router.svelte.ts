/** A small history-API router: the node serves index.html for every console path. */

export type Route =
  | { name: 'nodes' }
  | { name: 'topics' }
  | { name: 'topic'; topic: string }
  | { name: 'dead-letters'; topic?: string }
  | { name: 'playground' }
  | { name: 'not-found'; path: string };

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

export function parse(pathname: string): Route {
  const parts = pathname
    .split('/')
    .filter((p) => p !== '')
    .map(decode);
  const [head, arg, ...rest] = parts;
  if (rest.length > 0) return { name: 'not-found', path: pathname };
  if (head === undefined || (head === 'nodes' && arg === undefined)) return { name: 'nodes' };
  if (head === 'topics') return arg === undefined ? { name: 'topics' } : { name: 'topic', topic: arg };
  if (head === 'dead-letters') return arg === undefined ? { name: 'dead-letters' } : { name: 'dead-letters', topic: arg };
  if (head === 'playground' && arg === undefined) return { name: 'playground' };
  return { name: 'not-found', path: pathname };
}

export const router = $state({ route: parse(location.pathname), search: location.search });

export function navigate(href: string, replace = false): void {
  if (href === location.pathname + location.search) return;
  if (replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  sync();
  window.scrollTo(0, 0);
}

function sync(): void {
  router.route = parse(location.pathname);
  router.search = location.search;
}

window.addEventListener('popstate', sync);

/** Paths used by links. */
export const paths = {
  nodes: '/',
  topics: '/topics',
  topic: (topic: string) => `/topics/${encodeURIComponent(topic)}`,
  deadLetters: (topic?: string) => (topic === undefined ? '/dead-letters' : `/dead-letters/${encodeURIComponent(topic)}`),
  playground: '/playground',
};

/** Turns clicks on same-origin links into client-side navigation. */
export function interceptLinks(event: MouseEvent): void {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const anchor = (event.target as Element | null)?.closest?.('a');
  if (!anchor || anchor.target || anchor.hasAttribute('download')) return;
  const href = anchor.getAttribute('href');
  if (!href?.startsWith('/') || href.startsWith('//') || href.startsWith('/api/')) return;
  event.preventDefault();
  navigate(href);
}
