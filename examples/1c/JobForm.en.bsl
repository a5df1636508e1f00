// OPI_OpenAI in a managed form: generate an image without freezing the form, showing the
// partial images as they arrive.
//
// The form has: attributes Prompt (String), ImageAddress (String, shown by a picture field
// Image), JobID (String), Status (String); commands Generate and Cancel. The add-in bundle is a
// common template OPI_OpenAI (the zip from examples/1c/package.sh). Token is read from where
// your configuration keeps secrets (here a placeholder function).

&AtClient
Var Client; // the add-in object: lives as long as the form, never in a form attribute

&AtClient
Procedure OnOpen(Cancel)
	If Not AttachAddIn("CommonTemplate.OPI_OpenAI", "OPI_OpenAI", AddInType.Native) Then
		Raise "Could not attach the OPI_OpenAI add-in";
	EndIf;
	Client = New("AddIn.OPI_OpenAI.Main");
	Prompt = "Yellow alpaca";
EndProcedure

&AtClient
Procedure Generate(Command)
	// partial_images > 0: the job streams, and each partial image arrives as an event with
	// the path of a file the add-in already wrote (in its temporary folder: no save_dir set).
	Description = Client.GetImageDescriptionStructure(Prompt, 1, , "1024x1024",
		"{""partial_images"": 2, ""quality"": ""medium""}");
	// Returns at once; the call runs on the add-in's worker thread.
	JobID = Client.StartGetImages("https://api.openai.com/", Token(), "gpt-image-1.5", Description);
	Status = "Generating...";
EndProcedure

&AtClient
Procedure Cancel(Command)
	If ValueIsFilled(JobID) Then
		Client.CancelJob(JobID); // the job ends with a "failed" event, code "cancelled"
	EndIf;
EndProcedure

// Events reach the form on 1C's own thread, one by one; the form stays responsive meanwhile.
&AtClient
Procedure ExternalEvent(Source, Event, Data)
	If Source <> "OPI_OpenAI" Then
		Return;
	EndIf;
	EventData = ParseJSON(Data);
	If EventData.Get("job") <> JobID Then
		Return; // another job of this or another form
	EndIf;
	If Event = "partial_image" Then
		ShowImageFile(EventData.Get("file"));
		Status = "Partial image " + Format(EventData.Get("index") + 1, "NG=") + " received";
	ElsIf Event = "done" Or Event = "failed" Then
		// The result JSON; the add-in forgets the job once it is handed over.
		Result = ParseJSON(Client.JobResult(JobID));
		JobID = "";
		Error = Result.Get("error");
		If Error <> Undefined Then
			Status = "Failed: " + ?(TypeOf(Error) = Type("Map"), Error.Get("message"), String(Error));
			Return;
		EndIf;
		Image = Result.Get("data")[0];
		If Image.Get("file") <> Undefined Then
			ShowImageFile(Image.Get("file"));
		Else
			ImageAddress = PutToTempStorage(Base64Value(Image.Get("b64_json")), UUID);
		EndIf;
		Status = "Done";
	EndIf;
EndProcedure

&AtClient
Procedure ShowImageFile(Path)
	// Copy the file now: the add-in's temporary folder is removed with the add-in object.
	ImageAddress = PutToTempStorage(New BinaryData(Path), UUID);
EndProcedure

&AtClient
Function ParseJSON(Text)
	Reader = New JSONReader;
	Reader.SetString(Text);
	Value = ReadJSON(Reader, True); // a Map
	Reader.Close();
	Return Value;
EndFunction

&AtClient
Function Token()
	Return "sk-..."; // take it from your configuration's secure storage
EndFunction
