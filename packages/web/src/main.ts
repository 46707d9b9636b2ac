// The console is built in its own issue; until then the page says where things are.
const app = document.querySelector<HTMLDivElement>('#app');
if (app) {
  app.innerHTML = '<h1>MeshMQ</h1><p>The console is coming. Clients connect at <code>/ws</code> or with Socket.IO.</p>';
}
