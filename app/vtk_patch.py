"""A browser-side fix for Panel's ``VTKVolume`` when its volume changes many times (a streaming run).

Panel 1.9's view rebuilds its whole vtk.js render window for every new volume and drops the old window without
deleting it: the window's resize listener keeps it, and its WebGL context, alive. Measured in headless Chromium
on a 2-core CPU (software WebGL): each rebuild blocks the page for 1.1-1.6 s (new context, shader compilation),
frames queue up behind each other, and after 16 frames Chromium starts killing the oldest WebGL contexts (the
atoms viewer's among them), on which vtk.js then throws.

:data:`VTK_VOLUME_PATCH`, put on the page once in an HTML pane (Panel runs its scripts), changes the view class:

* a new volume of the same shape goes into the existing window (volume and slice mappers, the opacity editor's
  histogram and range, the colour range, the edge-gradient opacity as the controller computes it), then one
  render (about 0.2-0.4 s in software WebGL against 1.1-1.6 s for a rebuild): no new WebGL context, no shader
  compilation, and the user's camera stays;
* any other rebuild first deletes the old window and releases its WebGL context, as the view's own ``remove()``
  does.

Where Panel's classes do not look as expected the script changes nothing, and a failing in-place update falls
back to the rebuild, so a Panel upgrade can at worst bring back the slow path.
"""

VTK_VOLUME_PATCH = """<script>(function () {
  if (window.gcdVtkVolumePatch || !window.Bokeh || !Bokeh.Models || !Bokeh.Models.get) return;
  var model;
  try { model = Bokeh.Models.get("panel.models.vtk.VTKVolumePlot"); } catch (error) { return; }
  var View = model && model.prototype.default_view;
  if (!View || typeof View.prototype.invalidate_render !== "function") return;
  var rebuild = View.prototype.invalidate_render, render = View.prototype.render;

  function scalarsOf(image) {
    var data = image.getPointData();
    return data.getScalars() || data.getArrays()[0];
  }
  function sameShape(a, b) {
    var da = a.getDimensions(), db = b.getDimensions();
    return da[0] === db[0] && da[1] === db[1] && da[2] === db[2];
  }
  function updateInPlace(view, image) {
    var scalars = scalarsOf(image), range = scalars.getRange();
    var volume = view.volume, property = volume.getProperty();
    volume.getMapper().setInputData(image);
    [view.image_actor_i, view.image_actor_j, view.image_actor_k].forEach(function (actor) {
      if (actor) actor.getMapper().setInputData(image);
    });
    var editor = view._controllerWidget && view._controllerWidget.getWidget();
    if (editor) {
      editor.setDataArray(scalars.getData());
      editor.applyOpacity(property.getScalarOpacity(0));
    }
    var slider = view.edge_gradient_slider, edge = slider ? Number(slider.value) : 0.2;
    property.setUseGradientOpacity(0, edge > 0);
    if (edge > 0) {
      var low = Math.max(0, edge - 0.3) / 0.7;
      property.setGradientOpacityMinimumValue(0, (range[1] - range[0]) * 0.2 * low * low);
      property.setGradientOpacityMaximumValue(0, (range[1] - range[0]) * edge * edge);
    }
    var colors = property.getRGBTransferFunction(0), before = colors.getMTime();
    colors.setMappingRange(range[0], range[1]);
    colors.updateRange();
    // a changed colour range has made the controller render already (its listener); one render is enough
    if (!editor || colors.getMTime() === before) view._vtk_renwin.getRenderWindow().render();
  }
  function release(view, old) {
    window.removeEventListener("resize", old.resize);
    if (view._orientationWidget) { view._orientationWidget.delete(); view._orientationWidget = null; }
    var glWindow = old.getApiSpecificRenderWindow ? old.getApiSpecificRenderWindow() : old.getOpenGLRenderWindow();
    var canvas = glWindow && glWindow.getCanvas();
    old.getRenderWindow().getInteractor().delete();
    old.delete();
    var gl = canvas && (canvas.getContext("webgl2") || canvas.getContext("webgl"));
    var lose = gl && gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
  }

  View.prototype.render = function () {
    var result = render.apply(this, arguments);
    this.gcdShownImage = this._vtk_image_data;  // the volume the new window shows
    return result;
  };
  View.prototype.invalidate_render = function () {
    var image = this._vtk_image_data, old = this._vtk_renwin, shown = this.gcdShownImage;
    if (old && image && shown && image !== shown && sameShape(image, shown)) {
      try {
        updateInPlace(this, image);
        this.gcdShownImage = image;
        window.gcdVtkInPlaceUpdates = (window.gcdVtkInPlaceUpdates || 0) + 1;
        return;
      } catch (error) { console.debug("gcd: in-place volume update failed; rebuilding", error); }
    }
    if (old) {
      try { release(this, old); } catch (error) { console.debug("gcd: could not release the old window", error); }
    }
    var result = rebuild.apply(this, arguments);
    window.gcdVtkRebuilds = (window.gcdVtkRebuilds || 0) + 1;
    return result;
  };
  window.gcdVtkVolumePatch = true;
})();</script>"""
