// A graph reload (ComfyUI's undo and redo) removes every node and makes it anew with the same id. In
// Vue nodes mode the front end keeps the DOM of a node whose id is unchanged and mounts a DOM widget's
// element only when that DOM is first made, so it goes on showing the removed node's element and the
// new node's is never shown. A removed node leaves its element's place here; its successor takes it over.

const leftPlaces = new Map(); // "<widget name>@<node id>" -> the element a removed node's widget showed

function placeKey(node, widget) {
  return `${widget.name}@${node.id}`;
}

/** Call from onRemoved: remembers where the widget's element is shown. */
export function leaveDomWidgetPlace(node, widget) {
  for (const [key, element] of leftPlaces) if (!element.isConnected) leftPlaces.delete(key);
  if (widget.element?.isConnected) leftPlaces.set(placeKey(node, widget), widget.element);
}

/** Call once the node is configured (its id is final): shows the widget where its predecessor's was. */
export function takeOverDomWidgetPlace(node, widget) {
  const key = placeKey(node, widget);
  const left = leftPlaces.get(key);
  leftPlaces.delete(key);
  if (left?.isConnected && left !== widget.element && !widget.element.isConnected) left.replaceWith(widget.element);
}
